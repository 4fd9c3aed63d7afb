/** The user's devices, choosing the one to work with, and the apps installed on it (GET_STATUS). */

import { useCallback, useEffect, useState } from 'react';
import type { Device } from '../lib/api';
import type { AppStatus, ProviderStatus, UnloadableApp } from '../tunnel/codec';
import { e2eKeysFor } from '../e2e/session';
import { getDeviceState } from '../tunnel/requests';
import { describeError } from '../lib/errors';
import { lastSeenText, UnloadableApps } from './Devices';
import { routeHref } from '../lib/route';
import { useApp } from './context';
import { FirstAppSuggestion } from './FirstApp';

/**
 * The apps installed on `deviceId`, asked with GET_STATUS whenever the device is (or comes)
 * online, with what else its DEVICE_STATUS says: its AI providers and models, and the apps
 * it cannot run.
 */
export function useInstalledApps(deviceId: string | null, online: boolean) {
  const { api, session } = useApp();
  const [apps, setApps] = useState<AppStatus[] | null>(null);
  const [providers, setProviders] = useState<ProviderStatus[] | null>(null);
  const [unloadable, setUnloadable] = useState<UnloadableApp[]>([]);
  const [error, setError] = useState('');
  const [loading, setLoading] = useState(false);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);

  useEffect(() => {
    setApps(null);
    setProviders(null);
    setUnloadable([]);
    setError('');
    if (!deviceId || !online) return;
    const controller = new AbortController();
    setLoading(true);
    void (async () => {
      try {
        const client = await session.client();
        // Sealed end to end when this browser is paired with the device.
        const e2e = await e2eKeysFor(deviceId);
        const state = await getDeviceState(client, {
          deviceId,
          token: await api.accessToken(),
          signal: controller.signal,
          ...(e2e ? { e2e } : {}),
        });
        if (!controller.signal.aborted) {
          setApps(state.apps);
          setProviders(state.providers);
          setUnloadable(state.unloadable);
        }
      } catch (err) {
        if (!controller.signal.aborted) setError(describeError(err).message);
      } finally {
        if (!controller.signal.aborted) setLoading(false);
      }
    })();
    return () => controller.abort();
  }, [api, session, deviceId, online, tick]);

  return { apps, providers, unloadable, error, loading, reload };
}

export function Workspace() {
  const { devices, device, devicesLoading } = useApp();

  return (
    <>
      <h2 tabIndex={-1}>Workspace</h2>
      {devices.length === 0 ? (
        <p className="card muted">
          {devicesLoading ? (
            'Loading devices…'
          ) : (
            <>
              No desktop yet. <a href={routeHref({ page: 'add-desktop' })}>Add a desktop</a>: install the desktop node
              on your computer and approve it here.
            </>
          )}
        </p>
      ) : (
        <>
          <p className="muted">
            Apps run on the device you work with: {device ? <strong>{device.name}</strong> : 'none chosen'}.
          </p>
          {devices.map((d) => (
            <DeviceCard key={d.id} device={d} chosen={d.id === device?.id} />
          ))}
        </>
      )}
    </>
  );
}

/** One device: its state, the apps installed on it, and the choice to work with it. */
function DeviceCard({ device, chosen }: { device: Device; chosen: boolean }) {
  const { selectDevice, appNames } = useApp();
  const { apps, unloadable, error, loading, reload } = useInstalledApps(device.id, device.online);
  const titleId = `device-${device.id}`;

  return (
    <section className={`card device-card${chosen ? ' chosen' : ''}`} aria-labelledby={titleId} aria-busy={loading}>
      <div className="row spread">
        <h3 id={titleId}>
          {device.name} <span className={`badge ${device.online ? 'online' : 'offline'}`}>{device.online ? 'online' : 'offline'}</span>
        </h3>
        <div className="row">
          <button type="button" className="secondary small" onClick={reload} disabled={!device.online || loading}>
            Refresh apps
          </button>
          <button
            type="button"
            className="small"
            aria-pressed={chosen}
            aria-label={`Work with ${device.name}`}
            onClick={() => selectDevice(device.id)}
          >
            {chosen ? 'Working with this one' : 'Work with this one'}
          </button>
        </div>
      </div>
      <p className="muted small-text">
        {device.online
          ? `Online${device.node_version ? `, desktop node ${device.node_version}` : ''}.`
          : `Offline${device.last_seen ? `, last seen ${lastSeenText(device.last_seen)}` : ''}. Start “desktop-node run” on it.`}
      </p>
      <div role="status" className="muted">
        {!device.online
          ? 'Its apps show when it comes online.'
          : loading
            ? 'Asking the device…'
            : error
              ? `Could not ask the device: ${error}`
              : ''}
      </div>
      {device.online && apps && apps.length === 0 && unloadable.length === 0 && (
        <FirstAppSuggestion deviceName={device.name} />
      )}
      <UnloadableApps deviceName={device.name} apps={unloadable} names={appNames} />
      {apps && apps.length > 0 && (
        <ul className="app-list" aria-label={`Apps on ${device.name}`}>
          {apps.map((a) => (
            <li key={a.id} className="app-row">
              <span>
                <strong>{appNames[a.id] ?? a.id}</strong> <span className="muted">{a.version}</span>
                {!a.enabled && <span className="badge offline">disabled</span>}
              </span>
              {a.enabled && (
                <a
                  className="button-link"
                  href={routeHref({ page: 'run', appId: a.id })}
                  aria-label={`Open ${appNames[a.id] ?? a.id} on ${device.name}`}
                  onClick={() => selectDevice(device.id)}
                >
                  Open
                </a>
              )}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
