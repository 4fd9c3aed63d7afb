/** A failure shown to a person: one sentence, and the code and message behind "Details". */

import type { HumanError } from '../lib/errors';

/**
 * `live`: announce it (role=alert); `sentence`: false when the sentence is already shown
 * elsewhere (a status line) and only the details belong here.
 */
export function ErrorNote({
  error,
  id,
  live = true,
  sentence = true,
}: {
  error: HumanError;
  id?: string;
  live?: boolean;
  sentence?: boolean;
}) {
  return (
    <div className="error-note" id={id} role={live ? 'alert' : undefined}>
      {sentence && <p className="error">{error.sentence}</p>}
      <details className="error-details">
        <summary>Details</summary>
        <p className="small-text">
          <code>{error.code}</code>: {error.details}
        </p>
      </details>
    </div>
  );
}
