/**
 * A mini-app's action as a form (its JSON Schema and uiSchema, rendered and validated by
 * @rjsf with ajv8), the run it starts (EXECUTE_ACTION), and its output as it streams:
 * markdown rendered safely, a status line in a live region, STREAM_END with the time it
 * took, ERROR as a readable message, and Cancel (also Escape) while it runs.
 */

import Form from '@rjsf/core';
import {
  TranslatableString,
  type CustomValidator,
  type IconButtonProps,
  type RJSFSchema,
  type UiSchema,
} from '@rjsf/utils';
import validator from '@rjsf/validator-ajv8';
import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from 'react';
import type { ActionResult } from '../tunnel/client';
import { describeError } from '../lib/errors';
import { renderMarkdown } from '../lib/markdown';
import { IDLE, describeRun, isActive, runReducer } from '../lib/run';

/** Runs an action on the device; what the runner needs from the relay session. */
export type RunFn = (
  action: string,
  payload: string,
  opts: { signal: AbortSignal; onChunk: (data: string) => void },
) => Promise<ActionResult>;

/** How a form's data becomes an action request. */
export type ToRequest = (action: string, formData: unknown) => { action: string; payload: string };

/** The marketplace case: the chosen action, with the form's data as its JSON payload. */
export const schemaRequest: ToRequest = (action, formData) => ({
  action,
  payload: JSON.stringify(formData ?? {}),
});

/** The form for an app this page has no schema for (installed from a local file, not the marketplace). */
export const FREEFORM_SCHEMA: RJSFSchema = {
  type: 'object',
  title: 'Run an action',
  description: 'This app is not in the marketplace, so its form is not known: name the action and give its input as JSON.',
  properties: {
    action: { type: 'string', title: 'Action', minLength: 1 },
    payload: { type: 'string', title: 'Input (JSON)', default: '{}' },
  },
  required: ['action', 'payload'],
};

export const FREEFORM_UI: UiSchema = { payload: { 'ui:widget': 'textarea', 'ui:options': { rows: 4 } } };

/** The free-form case: the action and the payload are fields of the form. */
export const freeformRequest: ToRequest = (_action, formData) => {
  const d = (formData ?? {}) as { action?: string; payload?: string };
  return { action: (d.action ?? '').trim(), payload: d.payload ?? '{}' };
};

/** The free-form input must be JSON. */
export const freeformValidate: CustomValidator = (formData, errors) => {
  const payload = (formData as { payload?: string } | undefined)?.payload;
  if (payload !== undefined) {
    try {
      JSON.parse(payload);
    } catch {
      errors.payload?.addError('must be valid JSON, e.g. {"topic": "QUIC"}');
    }
  }
  return errors;
};

export interface MiniAppRunnerProps {
  /** `{"<action>": <JSON Schema>}`. */
  actions: Record<string, RJSFSchema>;
  /** `{"<action>": <uiSchema>}`. */
  uiSchemas?: Record<string, UiSchema>;
  /** Where it runs, for the button's label. */
  deviceName: string;
  /** Why it cannot run now (e.g. the device is offline), or null. */
  blocked?: string | null;
  run: RunFn;
  toRequest?: ToRequest;
  customValidate?: CustomValidator;
  /** Called after every run (e.g. to refresh the plan's usage). */
  onFinished?: () => void;
  /**
   * For an app this page has no schema for: ignore `actions`, `uiSchemas`, `toRequest` and
   * `customValidate` and show the free-form form ({@link FREEFORM_SCHEMA}).
   */
  freeform?: boolean;
}

/**
 * @rjsf's core buttons for array items show only a Bootstrap glyph, which this page does
 * not have: these show their words instead (which also name them for screen readers).
 */
function textButton(label: TranslatableString, className = 'secondary small') {
  function TextButton(props: IconButtonProps) {
    // Drop the props that are not the button's own.
    const { registry, uiSchema: _ui, iconType: _t, icon: _i, className: extra, ...rest } = props;
    const text = registry.translateString(label);
    return (
      <button type="button" {...rest} className={`${className} ${extra ?? ''}`.trim()} title={text}>
        {text}
      </button>
    );
  }
  return TextButton;
}

const BUTTON_TEMPLATES = {
  AddButton: textButton(TranslatableString.AddButton),
  CopyButton: textButton(TranslatableString.CopyButton),
  MoveDownButton: textButton(TranslatableString.MoveDownButton),
  MoveUpButton: textButton(TranslatableString.MoveUpButton),
  RemoveButton: textButton(TranslatableString.RemoveButton),
  ClearButton: textButton(TranslatableString.ClearButton),
};

/** The runner, or the free-form runner when `freeform` is set. */
export function MiniAppRunner(props: MiniAppRunnerProps) {
  if (!props.freeform) return <SchemaRunner {...props} />;
  return (
    <SchemaRunner
      {...props}
      actions={{ '': FREEFORM_SCHEMA }}
      uiSchemas={{ '': FREEFORM_UI }}
      toRequest={freeformRequest}
      customValidate={freeformValidate}
    />
  );
}

export default MiniAppRunner;

function SchemaRunner({
  actions,
  uiSchemas = {},
  deviceName,
  blocked = null,
  run,
  toRequest = schemaRequest,
  customValidate,
  onFinished,
}: MiniAppRunnerProps) {
  const names = Object.keys(actions);
  const [action, setAction] = useState(names[0] ?? '');
  const [formData, setFormData] = useState<Record<string, unknown>>({});
  const [state, dispatch] = useReducer(runReducer, IDLE);
  const controller = useRef<AbortController | null>(null);
  const runButton = useRef<HTMLButtonElement>(null);
  const cancelButton = useRef<HTMLButtonElement>(null);
  const active = isActive(state);

  const schema = actions[action] ?? { type: 'object' };
  const uiSchema = useMemo<UiSchema>(() => ({ ...(uiSchemas[action] ?? {}) }), [uiSchemas, action]);

  const cancel = useCallback(() => {
    const c = controller.current;
    if (!c || c.signal.aborted) return;
    dispatch({ type: 'cancel' });
    c.abort();
  }, []);

  // Escape cancels a running action, wherever the focus is.
  useEffect(() => {
    if (!active) return;
    const onKey = (e: KeyboardEvent): void => {
      if (e.key === 'Escape') {
        e.preventDefault();
        cancel();
      }
    };
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, [active, cancel]);

  const refocus = useRef(false);
  useEffect(() => {
    if (!active && refocus.current) {
      refocus.current = false;
      runButton.current?.focus();
    }
  }, [active]);

  // Leaving the page stops the run.
  useEffect(() => () => controller.current?.abort(), []);

  async function start(data: unknown): Promise<void> {
    if (controller.current || blocked) return;
    const req = toRequest(action, data);
    const c = new AbortController();
    controller.current = c;
    dispatch({ type: 'start' });
    try {
      const result = await run(req.action, req.payload, {
        signal: c.signal,
        onChunk: (chunk) => dispatch({ type: 'chunk', data: chunk }),
      });
      dispatch({ type: 'end', chunks: result.chunks, elapsedMs: result.elapsedMs });
    } catch (err) {
      const { code, message } = describeError(err);
      if (c.signal.aborted && code === 'cancelled') dispatch({ type: 'cancelled' });
      else dispatch({ type: 'error', code, message });
    } finally {
      controller.current = null;
      // The Cancel button is about to be disabled: if it has the focus, hand it to Run
      // once that is enabled again (see the effect below).
      refocus.current =
        document.activeElement === cancelButton.current || document.activeElement === document.body;
      onFinished?.();
    }
  }

  const html = useMemo(() => renderMarkdown(state.output), [state.output]);
  const status = describeRun(state);

  return (
    <div className="runner">
      {names.length > 1 && (
        <div className="field">
          <label htmlFor="action-choice">Action</label>
          <select
            id="action-choice"
            value={action}
            disabled={active}
            onChange={(e) => {
              setAction(e.target.value);
              setFormData({});
            }}
          >
            {names.map((n) => (
              <option key={n} value={n}>
                {(actions[n]?.title as string | undefined) ?? n}
              </option>
            ))}
          </select>
        </div>
      )}
      <Form
        key={action}
        schema={schema}
        uiSchema={uiSchema}
        validator={validator}
        formData={formData}
        onChange={(e) => setFormData((e.formData ?? {}) as Record<string, unknown>)}
        onSubmit={(e) => void start(e.formData)}
        customValidate={customValidate}
        // The errors are shown on the form (and the first invalid field focused); no console report.
        onError={() => undefined}
        noHtml5Validate
        showErrorList="top"
        focusOnFirstError
        readonly={active}
        className="miniapp-form"
        templates={{ ButtonTemplates: BUTTON_TEMPLATES }}
      >
        <div className="row">
          <button type="submit" ref={runButton} disabled={active || !!blocked}>
            Run on {deviceName}
          </button>
          <button type="button" ref={cancelButton} className="secondary" disabled={!active} onClick={cancel}>
            Cancel
          </button>
        </div>
      </Form>
      {blocked && <p className="muted">{blocked}</p>}
      <p id="run-status" role="status" aria-live="polite" className={state.phase === 'failed' ? 'error' : ''}>
        {status}
      </p>
      {active && <p className="muted small-text">Press Escape to cancel.</p>}
      <h3 id="output-title">Output</h3>
      <div
        id="output"
        className="output markdown"
        aria-labelledby="output-title"
        aria-busy={active}
        // Rendered by marked with raw HTML escaped, then sanitised by DOMPurify (src/lib/markdown.ts).
        dangerouslySetInnerHTML={{ __html: html }}
      />
    </div>
  );
}
