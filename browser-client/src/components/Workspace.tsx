/** The user's devices, choosing the one to work with, and the apps installed on it (GET_STATUS). */

import { useCallback, useEffect, useState } from 'react';
import type { AppStatus } from '../tunnel/codec';
import { getDeviceState } from '../tunnel/requests';
import { describeError } from '../lib/errors';
import { routeHref } from '../lib/route';
import { useApp } from './context';

/** The apps installed on `deviceId`, asked with GET_STATUS whenever the device is (or comes) online. */
export function useInstalledApps(deviceId: string | null, online: boolean) {
  const { api, session } = useApp();
  const [apps, setApps] = useState<AppStatus[] | null>(null);
  const [error, setError] = useState('');
  const [loading, setLoading] = useState(false);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);

  useEffect(() => {
    setApps(null);
    setError('');
    if (!deviceId || !online) return;
    const controller = new AbortController();
    setLoading(true);
    void (async () => {
      try {
        const client = await session.client();
        const state = await getDeviceState(client, {
          deviceId,
          token: await api.accessToken(),
          signal: controller.signal,
        });
        if (!controller.signal.aborted) setApps(state.apps);
      } catch (err) {
        if (!controller.signal.aborted) setError(describeError(err).message);
      } finally {
        if (!controller.signal.aborted) setLoading(false);
      }
    })();
    return () => controller.abort();
  }, [api, session, deviceId, online, tick]);

  return { apps, error, loading, reload };
}

export function Workspace() {
  const { devices, device, selectDevice, devicesLoading } = useApp();
  const { apps, error, loading, reload } = useInstalledApps(device?.id ?? null, device?.online ?? false);

  return (
    <>
      <h2 tabIndex={-1}>Workspace</h2>
      <section className="card" aria-labelledby="choose-device">
        <h3 id="choose-device">Device</h3>
        {devices.length === 0 ? (
          <p className="muted">
            {devicesLoading
              ? 'Loading devices…'
              : 'No devices yet. Run “desktop-node login” on your computer, then “desktop-node run”.'}
          </p>
        ) : (
          <div className="field">
            <label htmlFor="device">Work with</label>
            <select id="device" value={device?.id ?? ''} onChange={(e) => selectDevice(e.target.value)}>
              {devices.map((d) => (
                <option key={d.id} value={d.id}>
                  {d.name} ({d.online ? 'online' : 'offline'})
                </option>
              ))}
            </select>
          </div>
        )}
        {device && (
          <p className="muted">
            {device.online
              ? `Online${device.node_version ? `, desktop node ${device.node_version}` : ''}.`
              : `Offline${device.last_seen ? `, last seen ${new Date(device.last_seen).toLocaleString()}` : ''}. Start “desktop-node run” on it.`}
          </p>
        )}
      </section>
      {device && (
        <section className="card" aria-labelledby="installed-title" aria-busy={loading}>
          <div className="row spread">
            <h3 id="installed-title">Apps on {device.name}</h3>
            <button type="button" className="secondary small" onClick={reload} disabled={!device.online || loading}>
              Refresh apps
            </button>
          </div>
          <div role="status" className="muted">
            {!device.online
              ? 'The device is offline: its apps show when it comes online.'
              : loading
                ? 'Asking the device…'
                : error
                  ? `Could not ask the device: ${error}`
                  : apps && apps.length === 0
                    ? 'No apps installed yet: find one in the Marketplace.'
                    : ''}
          </div>
          {apps && apps.length > 0 && (
            <ul className="app-list" aria-label={`Apps on ${device.name}`}>
              {apps.map((a) => (
                <li key={a.id} className="app-row">
                  <span>
                    <strong>{a.id}</strong> <span className="muted">{a.version}</span>
                    {!a.enabled && <span className="badge offline">disabled</span>}
                  </span>
                  {a.enabled && (
                    <a className="button-link" href={routeHref({ page: 'run', appId: a.id })} aria-label={`Open ${a.id}`}>
                      Open
                    </a>
                  )}
                </li>
              ))}
            </ul>
          )}
        </section>
      )}
    </>
  );
}
