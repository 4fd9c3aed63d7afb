/**
 * A mini-app's action as a form (its JSON Schema and uiSchema, rendered and validated by
 * @rjsf with ajv8; required fields first, validation messages in words), the run it
 * starts (EXECUTE_ACTION), and its output as it streams: markdown rendered safely, a
 * status line in a live region, STREAM_END with the time it took, ERROR as a sentence
 * with its code behind "Details", and Cancel (also Escape) while it runs.
 *
 * The run lives in a {@link RunStore} (the shell's, under `runKey`), not in this
 * component: leaving the screen does not stop it, and coming back shows it.
 */

import Form from '@rjsf/core';
import {
  TranslatableString,
  type CustomValidator,
  type ErrorTransformer,
  type IconButtonProps,
  type RJSFSchema,
  type UiSchema,
} from '@rjsf/utils';
import validator from '@rjsf/validator-ajv8';
import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from 'react';
import type { ActionResult } from '../tunnel/client';
import { humanFromCode, validationSentence } from '../lib/errors';
import { readableLabels } from '../lib/formLabels';
import { FILE_WIDGET, withFileFields, type FileAccess } from '../lib/files';
import { inputAsFormData } from '../lib/history';
import { copyText, decorateCodeBlocks, flashCopied, renderMarkdown } from '../lib/markdown';
import { describeRun, isActive } from '../lib/run';
import { RunStore } from '../lib/runs';
import { ErrorNote } from './ErrorNote';
import { FilePicker } from './FilePicker';

/** Custom widgets: file fields get the desktop file picker (components/FilePicker.tsx). */
const WIDGETS = { [FILE_WIDGET]: FilePicker };

/**
 * Runs an action on the device; what the runner needs from the relay session. `model`:
 * the model the person chose, absent for the desktop's default.
 */
export type RunFn = (
  action: string,
  payload: string,
  opts: { signal: AbortSignal; onChunk: (data: string) => void; model?: string },
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
  /** Where the run lives (the shell's store); without one, a store of this component's own. */
  runs?: RunStore;
  /** The run's key in `runs` (`<device>/<app>`). */
  runKey?: string;
  /**
   * The models the desktop offers (its DEVICE_STATUS, default first): with several, the
   * form offers a choice, sent with the run.
   */
  models?: string[];
  /** Browsing and uploads for file fields (lib/files.ts); without it they are typed only. */
  files?: FileAccess;
}

/**
 * The uiSchema with required fields first (`ui:order`), unless the author chose an
 * order: a person fills in what is needed before what is optional.
 */
export function requiredFirst(schema: RJSFSchema, uiSchema: UiSchema): UiSchema {
  if (uiSchema['ui:order'] || schema.type !== 'object' || !schema.properties) return uiSchema;
  const names = Object.keys(schema.properties);
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  if (!required.size) return uiSchema;
  const order = [...names.filter((n) => required.has(n)), ...names.filter((n) => !required.has(n))];
  return { ...uiSchema, 'ui:order': order };
}

/** The schema's field titles by property name, for validation sentences. */
function titlesOf(schema: RJSFSchema): Record<string, string> {
  const titles: Record<string, string> = {};
  for (const [name, prop] of Object.entries(schema.properties ?? {})) {
    if (prop && typeof prop === 'object' && typeof prop.title === 'string') titles[name] = prop.title;
  }
  return titles;
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
  runs,
  runKey = '',
  files,
  models = [],
}: MiniAppRunnerProps) {
  const names = Object.keys(actions);
  // The chosen model ('' = the desktop's default, the first it lists).
  const [model, setModel] = useState('');
  const chosenModel = model && models.includes(model) && model !== models[0] ? model : undefined;
  // Without the shell's store, a store of this component's own that ends with it.
  const [ownStore] = useState(() => (runs ? null : new RunStore()));
  const store = runs ?? ownStore!;
  useEffect(() => () => ownStore?.abortAll(), [ownStore]);
  const entry = useSyncExternalStore(store.subscribe, () => store.get(runKey));
  const state = entry.state;
  const action = entry.action && names.includes(entry.action) ? entry.action : (names[0] ?? '');
  const formData = entry.formData;
  const runButton = useRef<HTMLButtonElement>(null);
  const cancelButton = useRef<HTMLButtonElement>(null);
  const active = isActive(state);

  const schema = actions[action] ?? { type: 'object' };
  const uiSchema = useMemo<UiSchema>(
    () => requiredFirst(schema, withFileFields(schema, readableLabels(schema, { ...(uiSchemas[action] ?? {}) }))),
    [schema, uiSchemas, action],
  );
  const transformErrors = useMemo<ErrorTransformer>(() => {
    const titles = titlesOf(schema);
    return (errors) =>
      errors.map((e) => {
        const sentence = validationSentence(e, titles);
        return { ...e, message: sentence, stack: sentence };
      });
  }, [schema]);

  const cancel = useCallback(() => store.cancel(runKey), [store, runKey]);
  const formContext = useMemo(() => ({ files }), [files]);

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

  async function start(data: unknown): Promise<void> {
    if (store.isRunning(runKey) || blocked) return;
    const req = toRequest(action, data);
    const opts = chosenModel ? { model: chosenModel } : {};
    await store.start(runKey, ({ signal, onChunk }) => run(req.action, req.payload, { signal, onChunk, ...opts }), () => {
      // The Cancel button is about to be disabled: if it has the focus, hand it to Run
      // once that is enabled again (see the effect above).
      refocus.current =
        document.activeElement === cancelButton.current || document.activeElement === document.body;
      onFinished?.();
    });
  }

  // History's "Run again": the past run's action and input fill this form.
  const prefill = entry.prefill;
  useEffect(() => {
    if (!prefill || active) return;
    if (names.length === 1 && names[0] === '') {
      store.applyPrefill(runKey, '', { action: prefill.action, payload: prefill.input });
    } else {
      store.applyPrefill(runKey, names.includes(prefill.action) ? prefill.action : action, inputAsFormData(prefill.input));
    }
  }, [prefill, active, names, store, runKey, action]);

  const html = useMemo(() => renderMarkdown(state.output), [state.output]);
  const status = describeRun(state);
  const outputRef = useRef<HTMLDivElement>(null);
  useEffect(() => decorateCodeBlocks(outputRef.current), [html]);

  return (
    <div className="runner">
      {names.length > 1 && (
        <div className="field">
          <label htmlFor="action-choice">Action</label>
          <select
            id="action-choice"
            value={action}
            disabled={active}
            onChange={(e) => store.setForm(runKey, e.target.value, {})}
          >
            {names.map((n) => (
              <option key={n} value={n}>
                {(actions[n]?.title as string | undefined) ?? n}
              </option>
            ))}
          </select>
        </div>
      )}
      {models.length > 1 && (
        <div className="field">
          <label htmlFor="model-choice">Model</label>
          <select id="model-choice" value={chosenModel ?? models[0]} disabled={active} onChange={(e) => setModel(e.target.value)}>
            {models.map((m, i) => (
              <option key={m} value={m}>
                {i === 0 ? `${m} (default)` : m}
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
        onChange={(e) => store.setForm(runKey, action, (e.formData ?? {}) as Record<string, unknown>)}
        onSubmit={(e) => void start(e.formData)}
        customValidate={customValidate}
        transformErrors={transformErrors}
        // The errors are shown on the form (and the first invalid field focused); no console report.
        onError={() => undefined}
        noHtml5Validate
        showErrorList="top"
        focusOnFirstError
        readonly={active}
        className="miniapp-form"
        templates={{ ButtonTemplates: BUTTON_TEMPLATES }}
        widgets={WIDGETS}
        formContext={formContext}
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
      <p
        id="run-status"
        role="status"
        aria-live="polite"
        className={state.phase === 'failed' ? 'error' : ''}
        data-chunks={state.phase === 'done' ? state.chunks : undefined}
      >
        {status}
      </p>
      {state.phase === 'failed' && (
        <ErrorNote error={humanFromCode(state.code, state.message)} live={false} sentence={false} id="run-error" />
      )}
      {active && <p className="muted small-text">Press Escape to cancel.</p>}
      <div className="row output-head">
        <h3 id="output-title">Output</h3>
        {state.output && (
          <button
            type="button"
            id="copy-output"
            className="secondary small"
            onClick={(e) => {
              const button = e.currentTarget;
              void copyText(state.output).then((ok) => flashCopied(button, ok, 'Copy output'));
            }}
          >
            Copy output
          </button>
        )}
      </div>
      <div
        ref={outputRef}
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
