/**
 * The History screen: the runs the chosen desktop kept (the desktop keeps them, not the
 * relay; docs/protocol.md, "History"), newest first, with a search and paging. Opening a
 * run shows its input and its output (Markdown, with copy buttons on code blocks); it can
 * be copied, downloaded as Markdown, run again with the same input (the runner opens with
 * the form filled), or deleted; "Delete all" empties the desktop's history.
 */

import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { e2eKeysFor } from '../e2e/session';
import { humanError, humanFromCode, type HumanError } from '../lib/errors';
import {
  PAGE_SIZE,
  deleteRuns,
  downloadText,
  getRun,
  listRuns,
  markdownFileName,
  prettyInput,
  runToMarkdown,
  statusText,
  type HistoryTarget,
  type RunRecord,
} from '../lib/history';
import { copyText, decorateCodeBlocks, flashCopied, renderMarkdown } from '../lib/markdown';
import { formatMs } from '../lib/run';
import { routeHref } from '../lib/route';
import { useApp } from './context';
import { ErrorNote } from './ErrorNote';

/** History-specific words for codes whose general sentence would mislead here. */
function historyError(err: unknown): HumanError {
  const e = humanError(err);
  if (e.code === 'unsupported' && /history/.test(e.details)) {
    return { ...e, sentence: 'This desktop keeps no run history: it is turned off in its node.toml ([history]).' };
  }
  if (e.code === 'malformed_frame' || e.code === 'unexpected_message') {
    return { ...e, sentence: 'This desktop’s node is too old to keep a run history. Update the desktop node.' };
  }
  if (e.code === 'unknown_run') {
    return { ...e, sentence: 'This run is no longer kept on the desktop (deleted, or past its retention).' };
  }
  return e;
}

function when(ms: number): string {
  return new Date(ms).toLocaleString();
}

export function HistoryPage() {
  const { api, session, device, runs: runStore, selectDevice } = useApp();
  const deviceId = device?.id ?? null;
  const online = device?.online ?? false;
  const [query, setQuery] = useState('');
  const [search, setSearch] = useState('');
  const [offset, setOffset] = useState(0);
  const [page, setPage] = useState<{ total: number; runs: RunRecord[] } | null>(null);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<HumanError | null>(null);
  const [openId, setOpenId] = useState<number | null>(null);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);

  const target = useCallback(
    async (signal?: AbortSignal): Promise<HistoryTarget> => {
      if (!deviceId) throw new Error('no device');
      return {
        client: await session.client(),
        deviceId,
        token: await api.accessToken(),
        // Sealed end to end when this browser is paired with the device.
        e2e: await e2eKeysFor(deviceId),
        ...(signal ? { signal } : {}),
      };
    },
    [api, session, deviceId],
  );

  // The search runs as the person types, a moment after they stop.
  useEffect(() => {
    const t = window.setTimeout(() => {
      setSearch(query.trim());
      setOffset(0);
    }, 300);
    return () => window.clearTimeout(t);
  }, [query]);

  useEffect(() => {
    setPage(null);
    setError(null);
    if (!deviceId || !online) return;
    const controller = new AbortController();
    setLoading(true);
    void (async () => {
      try {
        const result = await listRuns(await target(controller.signal), search, offset);
        if (!controller.signal.aborted) setPage(result);
      } catch (err) {
        if (!controller.signal.aborted) setError(historyError(err));
      } finally {
        if (!controller.signal.aborted) setLoading(false);
      }
    })();
    return () => controller.abort();
  }, [target, deviceId, online, search, offset, tick]);

  // Another device: another history.
  useEffect(() => setOpenId(null), [deviceId]);

  async function deleteAll(): Promise<void> {
    if (!window.confirm(`Delete every run kept on ${device?.name ?? 'this desktop'}? This cannot be undone.`)) return;
    try {
      await deleteRuns(await target(), null);
      setOpenId(null);
      setOffset(0);
      reload();
    } catch (err) {
      setError(historyError(err));
    }
  }

  if (!device) {
    return (
      <>
        <h2 tabIndex={-1}>History</h2>
        <p className="card muted">
          No desktop yet. <a href={routeHref({ page: 'add-desktop' })}>Add a desktop</a> first.
        </p>
      </>
    );
  }

  const total = page?.total ?? 0;
  return (
    <>
      <h2 tabIndex={-1}>History</h2>
      <p className="muted">
        Runs kept on <strong>{device.name}</strong>. They stay on your desktop; the relay keeps none. Choose another
        device in the sidebar to see its runs.
      </p>
      {!online && (
        <p className="card muted" role="status">
          {device.name} is offline: its history is on the desktop, so start the desktop node on it (desktop-node run) to
          see it.
        </p>
      )}
      {online && (
        <section className="card history" aria-labelledby="history-list-title">
          <h3 id="history-list-title" className="visually-hidden">
            Runs on {device.name}
          </h3>
          <div className="row history-tools">
            <div className="field grow">
              <label htmlFor="history-search">Search runs</label>
              <input
                id="history-search"
                type="search"
                value={query}
                placeholder="App, action, words in the input or output"
                onChange={(e) => setQuery(e.target.value)}
              />
            </div>
            <button type="button" className="secondary small" onClick={reload}>
              Refresh
            </button>
            <button type="button" className="secondary small danger" onClick={() => void deleteAll()} disabled={!total}>
              Delete all
            </button>
          </div>
          <p id="history-status" role="status" className="muted">
            {loading
              ? 'Loading runs…'
              : page
                ? total === 0
                  ? search
                    ? `No run matches “${search}”.`
                    : 'No runs yet. Run an app and it shows up here.'
                  : `${total} run${total === 1 ? '' : 's'}${search ? ` matching “${search}”` : ''}; showing ${offset + 1}–${offset + page.runs.length}.`
                : ''}
          </p>
          {error && <ErrorNote error={error} id="history-error" />}
          {page && page.runs.length > 0 && (
            <ul className="history-list" aria-label="Runs">
              {page.runs.map((r) => (
                <li key={r.id}>
                  <button
                    type="button"
                    className={`history-item${openId === r.id ? ' chosen' : ''}`}
                    aria-pressed={openId === r.id}
                    aria-controls="history-run"
                    data-run={r.id}
                    onClick={() => setOpenId(r.id)}
                  >
                    <span className="history-title">
                      {r.appName || r.appId} · {r.action}
                    </span>{' '}
                    <span className={`badge status-${r.status}`}>{statusText(r)}</span>
                    <span className="history-meta muted small-text">
                      {when(r.startedMs)} · {formatMs(r.durationMs)}
                    </span>
                    <span className="history-preview small-text">{r.input}</span>
                  </button>
                </li>
              ))}
            </ul>
          )}
          {page && total > PAGE_SIZE && (
            <div className="row">
              <button
                type="button"
                className="secondary small"
                disabled={offset === 0}
                onClick={() => setOffset(Math.max(0, offset - PAGE_SIZE))}
              >
                Newer
              </button>
              <button
                type="button"
                className="secondary small"
                disabled={offset + PAGE_SIZE >= total}
                onClick={() => setOffset(offset + PAGE_SIZE)}
              >
                Older
              </button>
            </div>
          )}
        </section>
      )}
      {online && openId !== null && (
        <RunView
          key={openId}
          runId={openId}
          deviceName={device.name}
          target={target}
          onDeleted={() => {
            setOpenId(null);
            reload();
          }}
          onRunAgain={(run) => {
            runStore.prefill(`${device.id}/${run.appId}`, run.action, run.input);
            selectDevice(device.id);
            window.location.hash = routeHref({ page: 'run', appId: run.appId });
          }}
        />
      )}
    </>
  );
}

/** One run in full, with its actions. */
function RunView({
  runId,
  deviceName,
  target,
  onDeleted,
  onRunAgain,
}: {
  runId: number;
  deviceName: string;
  target: (signal?: AbortSignal) => Promise<HistoryTarget>;
  onDeleted: () => void;
  onRunAgain: (run: RunRecord) => void;
}) {
  const [run, setRun] = useState<RunRecord | null>(null);
  const [error, setError] = useState<HumanError | null>(null);
  const outputRef = useRef<HTMLDivElement>(null);

  useEffect(() => {
    const controller = new AbortController();
    void (async () => {
      try {
        const r = await getRun(await target(controller.signal), runId);
        if (!controller.signal.aborted) setRun(r);
      } catch (err) {
        if (!controller.signal.aborted) setError(historyError(err));
      }
    })();
    return () => controller.abort();
  }, [runId, target]);

  const html = useMemo(() => (run ? renderMarkdown(run.output) : ''), [run]);
  useEffect(() => decorateCodeBlocks(outputRef.current), [html]);

  async function remove(): Promise<void> {
    try {
      await deleteRuns(await target(), runId);
      onDeleted();
    } catch (err) {
      setError(historyError(err));
    }
  }

  return (
    <section className="card history-run" id="history-run" aria-labelledby="history-run-title">
      {!run && !error && <p role="status">Loading the run…</p>}
      {error && <ErrorNote error={error} id="history-run-error" />}
      {run && (
        <>
          <h3 id="history-run-title">
            {run.appName || run.appId} · {run.action}
          </h3>
          <p className="muted" id="history-run-meta">
            {when(run.startedMs)} · took {formatMs(run.durationMs)} · <span data-status={run.status}>{statusText(run)}</span>
            {run.capped && ' · the desktop kept only the beginning of the input or output'}
          </p>
          {run.status !== 'done' && run.errorMessage && (
            <ErrorNote error={humanFromCode(run.errorCode, run.errorMessage)} live={false} />
          )}
          <div className="row">
            <button type="button" id="history-run-again" onClick={() => onRunAgain(run)}>
              Run again
            </button>
            <button
              type="button"
              className="secondary"
              id="history-copy"
              disabled={!run.output}
              onClick={(e) => {
                const button = e.currentTarget;
                void copyText(run.output).then((ok) => flashCopied(button, ok, 'Copy output'));
              }}
            >
              Copy output
            </button>
            <button
              type="button"
              className="secondary"
              id="history-download"
              onClick={() => downloadText(markdownFileName(run), runToMarkdown(run, deviceName))}
            >
              Download Markdown
            </button>
            <button type="button" className="secondary danger" id="history-delete" onClick={() => void remove()}>
              Delete
            </button>
          </div>
          <h4>Input</h4>
          <pre id="history-input" className="history-input">
            {prettyInput(run.input)}
          </pre>
          <h4 id="history-output-title">Output</h4>
          <div
            ref={outputRef}
            id="history-output"
            className="output markdown"
            aria-labelledby="history-output-title"
            // Rendered by marked with raw HTML escaped, then sanitised by DOMPurify (src/lib/markdown.ts).
            dangerouslySetInnerHTML={{ __html: html }}
          />
        </>
      )}
    </section>
  );
}
