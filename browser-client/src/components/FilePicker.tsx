/**
 * The widget of a form's file field (lib/files.ts): the path can be typed (`~/…`,
 * `$DOCUMENTS/…`, a full path), chosen on the desktop by browsing the folders the app
 * was granted ("Browse desktop"), or uploaded from this browser into the app's own
 * folder on the desktop ("Upload a file", with a progress bar and Cancel). Refusals are
 * the desktop's sentences, with the code behind "Details". Usable at phone width: the
 * buttons wrap and the list scrolls inside its box.
 */

import type { WidgetProps } from '@rjsf/utils';
import { useEffect, useRef, useState } from 'react';
import { humanError, type HumanError } from '../lib/errors';
import {
  formatSize,
  parentOf,
  percent,
  rootLabel,
  type FileAccess,
  type FileEntry,
  type FolderPage,
} from '../lib/files';
import { RemoteError } from '../tunnel/client';
import { ErrorNote } from './ErrorNote';

/** The desktop's refusals are sentences already: show them as they are. */
function fileError(err: unknown): HumanError {
  const human = humanError(err);
  if (err instanceof RemoteError && /[.!?]$/.test(err.message.trim()) && err.code !== 'internal') {
    return { ...human, sentence: err.message.trim() };
  }
  return human;
}

type Upload =
  | { phase: 'idle' }
  | { phase: 'sending'; name: string; received: number; size: number; abort: AbortController }
  | { phase: 'stored'; name: string; path: string; size: number }
  | { phase: 'cancelled'; name: string };

export function FilePicker(props: WidgetProps) {
  const { id, value, onChange, disabled, readonly, placeholder, registry } = props;
  const files = (registry.formContext as { files?: FileAccess } | undefined)?.files;
  const locked = !!disabled || !!readonly;
  const [browsing, setBrowsing] = useState(false);
  const [page, setPage] = useState<FolderPage | null>(null);
  const [roots, setRoots] = useState<string[]>([]);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<HumanError | null>(null);
  const [upload, setUpload] = useState<Upload>({ phase: 'idle' });
  const fileInput = useRef<HTMLInputElement>(null);
  const alive = useRef(true);
  const uploading = useRef<AbortController | null>(null);
  useEffect(() => {
    alive.current = true;
    return () => {
      alive.current = false;
      // Leaving the form cancels an upload that is still going (the desktop keeps nothing).
      uploading.current?.abort();
    };
  }, []);

  async function open(path: string, offset = 0): Promise<void> {
    if (!files) return;
    setLoading(true);
    setError(null);
    try {
      const next = await files.list(path, offset);
      if (!alive.current) return;
      if (path === '') setRoots(next.entries.map((e) => e.path));
      setPage(offset > 0 && page && page.path === next.path ? { ...next, entries: [...page.entries, ...next.entries] } : next);
    } catch (err) {
      if (alive.current) setError(fileError(err));
    } finally {
      if (alive.current) setLoading(false);
    }
  }

  function choose(entry: FileEntry): void {
    if (entry.dir) {
      void open(entry.path);
      return;
    }
    onChange(entry.path);
    setBrowsing(false);
  }

  async function send(file: File): Promise<void> {
    if (!files) return;
    const abort = new AbortController();
    uploading.current = abort;
    setError(null);
    setUpload({ phase: 'sending', name: file.name, received: 0, size: file.size, abort });
    try {
      const stored = await files.upload(
        file,
        (received, size) => alive.current && setUpload((u) => (u.phase === 'sending' ? { ...u, received, size } : u)),
        abort.signal,
      );
      if (!alive.current) return;
      setUpload({ phase: 'stored', name: file.name, path: stored.path, size: stored.size });
      onChange(stored.path);
    } catch (err) {
      if (!alive.current) return;
      if (err instanceof DOMException && err.name === 'AbortError') {
        // The desktop removes what it had received when it takes the CANCEL (or sees the
        // stream reset), before it answers.
        setUpload({ phase: 'cancelled', name: file.name });
      } else {
        setUpload({ phase: 'idle' });
        setError(fileError(err));
      }
    } finally {
      if (uploading.current === abort) uploading.current = null;
      if (fileInput.current) fileInput.current.value = '';
    }
  }

  const parent = page && page.path !== '' ? parentOf(page.path, roots) : null;
  const sending = upload.phase === 'sending';

  return (
    <div className="file-picker">
      <input
        id={id}
        type="text"
        className="file-path"
        value={typeof value === 'string' ? value : ''}
        placeholder={placeholder || '~/Documents/notes.md or $DOCUMENTS/notes.md'}
        disabled={locked}
        autoComplete="off"
        spellCheck={false}
        onChange={(e) => onChange(e.target.value === '' ? undefined : e.target.value)}
        onBlur={(e) => props.onBlur(id, e.target.value)}
        onFocus={(e) => props.onFocus(id, e.target.value)}
      />
      {files && (
        <div className="row file-actions">
          <button
            type="button"
            className="secondary small"
            id={`${id}-browse`}
            aria-expanded={browsing}
            disabled={locked || sending}
            onClick={() => {
              const next = !browsing;
              setBrowsing(next);
              if (next) void open('');
            }}
          >
            {browsing ? 'Close the list' : 'Browse desktop'}
          </button>
          <button
            type="button"
            className="secondary small"
            id={`${id}-upload`}
            disabled={locked || sending}
            onClick={() => fileInput.current?.click()}
          >
            Upload a file
          </button>
          <input
            ref={fileInput}
            type="file"
            className="visually-hidden"
            tabIndex={-1}
            aria-label={`Upload a file to ${files.appName} on your desktop`}
            id={`${id}-file`}
            onChange={(e) => {
              const file = e.target.files?.[0];
              if (file) void send(file);
            }}
          />
        </div>
      )}
      {sending && (
        <div className="file-upload" role="status" aria-live="polite">
          <label htmlFor={`${id}-progress`} className="small-text">
            Uploading {upload.name}: {formatSize(upload.received)} of {formatSize(upload.size)}
          </label>
          <progress id={`${id}-progress`} max={100} value={percent(upload.received, upload.size)} />
          <button type="button" className="secondary small" onClick={() => upload.abort.abort()}>
            Cancel upload
          </button>
        </div>
      )}
      {upload.phase === 'stored' && value === upload.path && (
        <p className="small-text muted file-stored" role="status">
          Uploaded {upload.name} ({formatSize(upload.size)}) to your desktop as {upload.path}.
        </p>
      )}
      {upload.phase === 'cancelled' && (
        <p className="small-text muted file-cancelled" role="status">
          Upload of {upload.name} cancelled; nothing of it was kept on your desktop.
        </p>
      )}
      {error && <ErrorNote error={error} id={`${id}-file-error`} />}
      {browsing && files && (
        <div className="file-browser" role="group" aria-label={`Folders ${files.appName} may open`}>
          <p className="small-text muted file-where" id={`${id}-where`}>
            {page === null || page.path === '' ? `Folders ${files.appName} was granted` : page.path}
          </p>
          {loading && <p role="status" className="small-text">Loading…</p>}
          {page && (
            <ul className="file-list" aria-labelledby={`${id}-where`}>
              {parent !== null && (
                <li>
                  <button type="button" className="file-entry" onClick={() => void open(parent)}>
                    ↑ Up
                  </button>
                </li>
              )}
              {page.entries.map((entry) => (
                <li key={entry.path}>
                  <button
                    type="button"
                    className="file-entry"
                    data-path={entry.path}
                    data-dir={entry.dir}
                    onClick={() => choose(entry)}
                  >
                    <span aria-hidden="true">{entry.dir ? '▸ ' : ''}</span>
                    <span className="file-name">{page.path === '' ? rootLabel(entry.name) : entry.name}</span>
                    {!entry.dir && <span className="muted small-text"> {formatSize(entry.size)}</span>}
                  </button>
                </li>
              ))}
              {page.entries.length === 0 && !loading && <li className="muted small-text">This folder is empty.</li>}
            </ul>
          )}
          {page && page.entries.length < page.total && (
            <button type="button" className="secondary small" onClick={() => void open(page.path, page.entries.length)}>
              Show more ({page.total - page.entries.length} left)
            </button>
          )}
        </div>
      )}
    </div>
  );
}

export default FilePicker;
