/**
 * One marketplace app: description, versions, rating, the permissions it asks for in
 * plain words, and "Install on <device>", which sends INSTALL_APP and follows the
 * desktop's answer: waiting for approval → downloading → installed, or denied.
 */

import { useEffect, useRef, useState } from 'react';
import { orderedActions, type MarketAppDetail } from '../lib/api';
import { describeError } from '../lib/errors';
import { describePermissions } from '../lib/permissions';
import { routeHref } from '../lib/route';
import { e2eKeysFor } from '../e2e/session';
import { installApp, type InstallProgress } from '../tunnel/requests';
import { useApp } from './context';
import { authorName, ratingText } from './Marketplace';

/** Where an install request stands. */
export type InstallView =
  | { kind: 'idle' }
  | { kind: 'sending' }
  | { kind: 'progress'; progress: InstallProgress }
  | { kind: 'installed'; version: string }
  | { kind: 'denied'; message: string }
  | { kind: 'failed'; code: string; message: string };

/** The install status line for a device. */
export function installText(v: InstallView, deviceName: string): string {
  switch (v.kind) {
    case 'idle':
      return '';
    case 'sending':
      return `Sending the install request to ${deviceName}…`;
    case 'progress':
      switch (v.progress.state) {
        case 'pending_approval':
          return `Waiting for approval on your desktop (${deviceName}): check the permissions there and approve or deny.`;
        case 'downloading':
          return v.progress.percent === null ? 'Downloading…' : `Downloading… ${Math.round(v.progress.percent)} %`;
        case 'installing':
          return 'Approved. Installing…';
        case 'installed':
          return `Installed version ${v.progress.version}.`;
        case 'other':
          return `Installing (${v.progress.name.replace(/_/g, ' ')})…`;
      }
      break;
    case 'installed':
      return `Installed${v.version ? ` version ${v.version}` : ''} on ${deviceName}.`;
    case 'denied':
      return `The install was denied on ${deviceName}.${v.message ? ` ${v.message}` : ''}`;
    case 'failed':
      return `The install failed [${v.code}]: ${v.message}`;
  }
}

function formatDate(value: string | number): string {
  const d = typeof value === 'number' ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleDateString();
}

function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function AppDetail({ appId }: { appId: string }) {
  const { api, session, device } = useApp();
  const [app, setApp] = useState<MarketAppDetail | null>(null);
  const [error, setError] = useState('');
  const [install, setInstall] = useState<InstallView>({ kind: 'idle' });
  const [stars, setStars] = useState('5');
  const [rateStatus, setRateStatus] = useState('');
  const installing = useRef<AbortController | null>(null);

  useEffect(() => {
    let stale = false;
    api.marketApp(appId).then(
      (a) => !stale && setApp(a),
      (err: unknown) => !stale && setError(describeError(err).message),
    );
    return () => {
      stale = true;
      installing.current?.abort();
    };
  }, [api, appId]);

  async function requestInstall(): Promise<void> {
    if (!device || !app || installing.current) return;
    const controller = new AbortController();
    installing.current = controller;
    setInstall({ kind: 'sending' });
    try {
      const client = await session.client();
      // Sealed end to end when this browser is paired with the device.
      const e2e = await e2eKeysFor(device.id);
      const version = await installApp(client, {
        ...(e2e ? { e2e } : {}),
        deviceId: device.id,
        token: await api.accessToken(),
        appId: app.id,
        version: app.latest_version ?? null,
        signal: controller.signal,
        onProgress: (progress) => setInstall({ kind: 'progress', progress }),
      });
      setInstall({ kind: 'installed', version });
    } catch (err) {
      if (controller.signal.aborted) return;
      const { code, message } = describeError(err);
      setInstall(code === 'denied' ? { kind: 'denied', message } : { kind: 'failed', code, message });
    } finally {
      if (installing.current === controller) installing.current = null;
    }
  }

  async function rate(): Promise<void> {
    if (!app) return;
    setRateStatus('Sending…');
    try {
      const rating = await api.rate(app.id, Number(stars));
      setApp({ ...app, rating });
      setRateStatus('Thank you: your rating is saved.');
    } catch (err) {
      setRateStatus(`Could not rate: ${describeError(err).message}`);
    }
  }

  if (error) {
    return (
      <>
        <h2 tabIndex={-1}>App not found</h2>
        <p role="alert" className="error">
          Could not load “{appId}”: {error}
        </p>
        <p>
          <a href={routeHref({ page: 'marketplace' })}>Back to the marketplace</a>
        </p>
      </>
    );
  }
  if (!app) {
    return (
      <>
        <h2 tabIndex={-1}>{appId}</h2>
        <p role="status">Loading…</p>
      </>
    );
  }

  const permissions = describePermissions(app.permissions);
  const busy = install.kind === 'sending' || install.kind === 'progress';
  const actions = orderedActions(app);

  return (
    <>
      <p>
        <a href={routeHref({ page: 'marketplace' })}>← Marketplace</a>
      </p>
      <h2 tabIndex={-1}>{app.name}</h2>
      <section className="card">
        <p>{app.description}</p>
        <dl className="facts">
          <dt>Author</dt>
          <dd>{authorName(app.author)}</dd>
          <dt>Category</dt>
          <dd>{app.category}</dd>
          <dt>Latest version</dt>
          <dd>{app.latest_version ?? 'none (every version withdrawn)'}</dd>
          <dt>Rating</dt>
          <dd id="app-rating">{ratingText(app.rating)}</dd>
          <dt>Installs</dt>
          <dd>{app.installs}</dd>
          {actions.length > 0 && (
            <>
              <dt>Actions</dt>
              <dd>{actions.join(', ')}</dd>
            </>
          )}
        </dl>
      </section>

      <section className="card" aria-labelledby="perm-title">
        <h3 id="perm-title">What it asks for</h3>
        {permissions.length === 0 ? (
          <p>Nothing: it runs in its sandbox without the AI model, your files, the network or the clipboard.</p>
        ) : (
          <ul id="permissions">
            {permissions.map((p) => (
              <li key={p}>{p}</li>
            ))}
          </ul>
        )}
        <p className="muted small-text">
          It can always keep its own data in a folder of its own. You approve these on your desktop before anything
          is installed.
        </p>
      </section>

      <section className="card" aria-labelledby="install-title">
        <h3 id="install-title">Install</h3>
        {device ? (
          <>
            <button type="button" onClick={() => void requestInstall()} disabled={busy || !device.online}>
              Install on {device.name}
            </button>
            {!device.online && <p className="muted">{device.name} is offline; start the desktop node to install.</p>}
          </>
        ) : (
          <p className="muted">Add a device first: sign in with the desktop node on your computer.</p>
        )}
        <div id="install-status" role="status" aria-live="polite" className={install.kind === 'failed' || install.kind === 'denied' ? 'error' : ''}>
          {device ? installText(install, device.name) : ''}
        </div>
        {install.kind === 'progress' && install.progress.state === 'downloading' && install.progress.percent !== null && (
          <progress max={100} value={install.progress.percent} aria-label="Download progress" />
        )}
        {install.kind === 'installed' && (
          <p>
            <a className="button-link" href={routeHref({ page: 'run', appId: app.id })}>
              Open {app.name}
            </a>
          </p>
        )}
      </section>

      <section className="card" aria-labelledby="versions-title">
        <h3 id="versions-title">Versions</h3>
        <table className="versions">
          <thead>
            <tr>
              <th scope="col">Version</th>
              <th scope="col">Published</th>
              <th scope="col">Needs desktop node</th>
              <th scope="col">Size</th>
              <th scope="col">Status</th>
            </tr>
          </thead>
          <tbody>
            {app.versions.map((v) => (
              <tr key={v.version}>
                <td>{v.version}</td>
                <td>{formatDate(v.published_at)}</td>
                <td>{v.runtime}</td>
                <td>{formatSize(v.size)}</td>
                <td>{v.yanked ? 'withdrawn' : v.version === app.latest_version ? 'latest' : ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>

      <section className="card" aria-labelledby="rate-title">
        <h3 id="rate-title">Rate it</h3>
        <form
          className="row"
          onSubmit={(e) => {
            e.preventDefault();
            void rate();
          }}
        >
          <div className="field">
            <label htmlFor="stars">Stars</label>
            <select id="stars" value={stars} onChange={(e) => setStars(e.target.value)}>
              {[5, 4, 3, 2, 1].map((n) => (
                <option key={n} value={n}>
                  {n} star{n === 1 ? '' : 's'}
                </option>
              ))}
            </select>
          </div>
          <button type="submit" className="secondary">
            Rate
          </button>
        </form>
        <p role="status" className="muted">
          {rateStatus}
        </p>
      </section>
    </>
  );
}
