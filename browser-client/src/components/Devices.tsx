/**
 * The devices page: each desktop with its state, when it was last seen, its node
 * version, the AI provider and models it uses (names only; its DEVICE_STATUS never
 * carries a key), the installed apps it cannot run and why, and rename and remove; a
 * link to add one.
 */

import { useEffect, useState, type FormEvent } from 'react';
import type { Device } from '../lib/api';
import { humanError, type HumanError } from '../lib/errors';
import { routeHref } from '../lib/route';
import type { ProviderStatus, UnloadableApp } from '../tunnel/codec';
import { ErrorNote } from './ErrorNote';
import { useApp } from './context';
import { useInstalledApps } from './Workspace';

/**
 * What a device's AI setup reads as: "openai: gpt-4o-mini (default), gpt-4o", with "no API
 * key set on the desktop yet" when the provider is not configured.
 */
export function providerText(p: ProviderStatus): string {
  const models = p.models.map((m, i) => (i === 0 && p.models.length > 1 ? `${m} (default)` : m)).join(', ');
  const key = p.configured ? '' : ' (no API key set on the desktop yet: desktop-node keys set)';
  return `${p.name}${models ? `: ${models}` : ''}${key}`;
}

/** The installed apps a desktop cannot run, each with the desktop's reason. */
export function UnloadableApps({
  deviceName,
  apps,
  names,
}: {
  deviceName: string;
  apps: UnloadableApp[];
  names: Record<string, string>;
}) {
  if (apps.length === 0) return null;
  return (
    <ul className="plain-list unloadable" aria-label={`Apps that can't run on ${deviceName}`}>
      {apps.map((a) => (
        <li key={a.id} className="muted">
          <strong>{names[a.id] ?? a.id}</strong>
          {a.version && ` ${a.version}`} can’t run on this desktop: {a.reason}
        </li>
      ))}
    </ul>
  );
}

/** "5 minutes ago", "just now", or a date, for a time in seconds since the epoch. */
export function lastSeenText(seconds: number | null, now = Date.now()): string {
  if (!seconds) return 'never';
  const ms = seconds * 1000; // the relay counts seconds, Date counts milliseconds
  const ago = Math.max(0, now - ms);
  if (ago < 60_000) return 'just now';
  if (ago < 3_600_000) {
    const m = Math.round(ago / 60_000);
    return `${m} minute${m === 1 ? '' : 's'} ago`;
  }
  if (ago < 86_400_000) {
    const h = Math.round(ago / 3_600_000);
    return `${h} hour${h === 1 ? '' : 's'} ago`;
  }
  return new Date(ms).toLocaleString();
}

export function DevicesPage() {
  const { devices, devicesLoading, reloadDevices } = useApp();
  // The list as it is now, each time the page opens: a desktop approved in the browser a
  // moment ago is registered only when its `desktop-node login` completes (after the
  // approval, and after the approval page reloaded the list), so an earlier list lacks it.
  useEffect(() => reloadDevices(), [reloadDevices]);
  return (
    <>
      <h2 tabIndex={-1}>Devices</h2>
      <p>
        <a className="button-link" href={routeHref({ page: 'add-desktop' })}>
          Add a desktop
        </a>
      </p>
      {devicesLoading && <p className="muted">Loading devices…</p>}
      {!devicesLoading && devices.length === 0 && <p className="card muted">No desktops yet.</p>}
      <ul className="plain-list" aria-label="Devices">
        {devices.map((d) => (
          <li key={d.id}>
            <DeviceRow device={d} />
          </li>
        ))}
      </ul>
    </>
  );
}

function DeviceRow({ device }: { device: Device }) {
  const { api, reloadDevices, reloadAccount, appNames } = useApp();
  const { providers, unloadable, loading, error: askError } = useInstalledApps(device.id, device.online);
  const [editing, setEditing] = useState(false);
  const [name, setName] = useState(device.name);
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState<HumanError | null>(null);
  const [busy, setBusy] = useState(false);
  const titleId = `devrow-${device.id}`;

  async function act(what: () => Promise<void>): Promise<void> {
    setBusy(true);
    setError(null);
    try {
      await what();
      reloadDevices();
      reloadAccount();
    } catch (err) {
      setError(humanError(err));
    } finally {
      setBusy(false);
    }
  }

  const rename = (e: FormEvent): void => {
    e.preventDefault();
    const next = name.trim();
    if (!next) {
      setError({ sentence: 'A name is required.', code: 'invalid', details: 'empty name' });
      return;
    }
    void act(async () => {
      await api.renameDevice(device.id, next);
      setEditing(false);
    });
  };

  return (
    <section className="card device-row" aria-labelledby={titleId}>
      <h3 id={titleId}>
        {device.name}{' '}
        <span className={`badge ${device.online ? 'online' : 'offline'}`}>{device.online ? 'online' : 'offline'}</span>
      </h3>
      <dl className="facts">
        <dt>Last seen</dt>
        <dd className="last-seen">{device.online ? 'now' : lastSeenText(device.last_seen)}</dd>
        <dt>Desktop node</dt>
        <dd className="node-version">{device.node_version ? `version ${device.node_version}` : 'not connected yet'}</dd>
        <dt>AI</dt>
        <dd className="ai-provider">
          {!device.online
            ? 'shown when it is online'
            : loading || providers === null
              ? askError
                ? `could not ask the device: ${askError}`
                : 'asking the device…'
              : providers.length === 0
                ? 'not reported (this desktop node is too old to say: update it)'
                : providers.map(providerText).join('; ')}
        </dd>
      </dl>
      <UnloadableApps deviceName={device.name} apps={unloadable} names={appNames} />
      {editing ? (
        <form className="row" onSubmit={rename}>
          <div className="field grow">
            <label htmlFor={`rename-${device.id}`}>New name</label>
            <input id={`rename-${device.id}`} value={name} maxLength={100} onChange={(e) => setName(e.target.value)} />
          </div>
          <button type="submit" disabled={busy}>
            Save
          </button>
          <button type="button" className="secondary" onClick={() => setEditing(false)}>
            Keep the name
          </button>
        </form>
      ) : confirming ? (
        <div className="row">
          <p>
            Remove {device.name}? It is signed out at once and must log in again to come back.
          </p>
          <button type="button" className="danger" disabled={busy} onClick={() => void act(() => api.removeDevice(device.id))}>
            Remove {device.name}
          </button>
          <button type="button" className="secondary" onClick={() => setConfirming(false)}>
            Keep it
          </button>
        </div>
      ) : (
        <div className="row">
          <button type="button" className="secondary small" onClick={() => setEditing(true)}>
            Rename
          </button>
          <button type="button" className="secondary small" onClick={() => setConfirming(true)}>
            Remove
          </button>
        </div>
      )}
      {error && <ErrorNote error={error} />}
    </section>
  );
}
