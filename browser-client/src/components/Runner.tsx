/**
 * The runner screen for one app on the chosen device: its action schemas come from the
 * marketplace detail; an app installed from a local file (not in the marketplace) gets a
 * free-form form instead.
 */

import type { RJSFSchema, UiSchema } from '@rjsf/utils';
import { Suspense, lazy, useEffect, useMemo, useState } from 'react';
import { e2eKeysFor, pairedFingerprint } from '../e2e/session';
import { ApiError, orderedActions } from '../lib/api';
import { describeError } from '../lib/errors';
import { fileAccess } from '../lib/files';
import { routeHref } from '../lib/route';
import { useApp } from './context';
import type { RunFn } from './MiniAppRunner';
import { useInstalledApps } from './Workspace';

/** The form renderer (@rjsf + ajv, marked + DOMPurify) loads with the first runner screen. */
const MiniAppRunner = lazy(() => import('./MiniAppRunner'));

type Loaded =
  | { kind: 'loading' }
  | { kind: 'market'; name: string; actions: Record<string, RJSFSchema>; ui: Record<string, UiSchema> }
  | { kind: 'local' }
  | { kind: 'error'; message: string };

export function RunnerPage({ appId }: { appId: string }) {
  const { api, session, device, reloadAccount, runs, appNames } = useApp();
  const runKey = `${device?.id ?? ''}/${appId}`;
  const [loaded, setLoaded] = useState<Loaded>({ kind: 'loading' });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    let stale = false;
    setLoaded({ kind: 'loading' });
    api.marketApp(appId).then(
      (a) => {
        if (stale) return;
        const schemas = (a.action_schema ?? {}) as Record<string, RJSFSchema>;
        // Rebuilt in the author's order: object keys keep insertion order.
        const actions = Object.fromEntries(orderedActions(a).map((name) => [name, schemas[name] as RJSFSchema]));
        setLoaded(
          Object.keys(actions).length
            ? { kind: 'market', name: a.name, actions, ui: (a.ui_schema ?? {}) as Record<string, UiSchema> }
            : { kind: 'local' },
        );
      },
      (err: unknown) => {
        if (stale) return;
        // 404: not in the marketplace (installed from a local file) — or no marketplace on this relay.
        if (err instanceof ApiError && err.status === 404) setLoaded({ kind: 'local' });
        else setLoaded({ kind: 'error', message: describeError(err).message });
      },
    );
    return () => {
      stale = true;
    };
  }, [api, appId, attempt]);

  // A device paired with this browser (docs/e2e.md) gets its actions end-to-end encrypted.
  const [e2eFingerprint, setE2eFingerprint] = useState<string | null>(null);
  const deviceId = device?.id;
  useEffect(() => {
    let stale = false;
    setE2eFingerprint(null);
    if (deviceId) {
      void pairedFingerprint(deviceId)
        .then((f) => !stale && setE2eFingerprint(f))
        .catch(() => {});
    }
    return () => {
      stale = true;
    };
  }, [deviceId]);

  // The models the desktop offers (its DEVICE_STATUS): a choice when there are several.
  const { providers } = useInstalledApps(device?.id ?? null, device?.online ?? false);
  const models = providers?.[0]?.models ?? [];

  const run: RunFn = async (action, payload, { signal, onChunk, model }) => {
    if (!device) throw new Error('choose a device first');
    const client = await session.client();
    const e2e = await e2eKeysFor(device.id);
    return client.runAction({
      deviceId: device.id,
      token: await api.accessToken(),
      appId,
      action,
      payload,
      signal,
      onChunk,
      ...(model ? { model } : {}),
      ...(e2e ? { e2e } : {}),
    });
  };

  // File fields: browse the app's granted folders on the desktop, upload into its data folder.
  const files = useMemo(
    () =>
      deviceId
        ? fileAccess({
            client: () => session.client(),
            deviceId,
            token: () => api.accessToken(),
            e2e: async () => (await e2eKeysFor(deviceId)) ?? null,
            appId,
            appName: loaded.kind === 'market' ? loaded.name : (appNames[appId] ?? appId),
          })
        : undefined,
    [deviceId, session, api, appId, loaded, appNames],
  );

  const blocked = !device
    ? 'Add a desktop first (Devices → Add a desktop).'
    : !device.online
      ? `${device.name} is offline: start the desktop node on it (desktop-node run) to run this app.`
      : null;
  const title = loaded.kind === 'market' ? loaded.name : (appNames[appId] ?? appId);

  return (
    <>
      <p>
        <a href={routeHref({ page: 'workspace' })}>← Workspace</a>
      </p>
      <h2 tabIndex={-1}>{title}</h2>
      <p className="muted">
        Runs on {device ? `${device.name} (${device.online ? 'online' : 'offline'})` : 'no device'}.
        {e2eFingerprint && ` End-to-end encrypted (desktop key ${e2eFingerprint}).`}
      </p>
      <section className="card" aria-labelledby="runner-title">
        <h3 id="runner-title" className="visually-hidden">
          Run {title}
        </h3>
        {loaded.kind === 'loading' && <p role="status">Loading the app’s form…</p>}
        {loaded.kind === 'error' && (
          <>
            <p role="alert" className="error">
              Could not load the app’s form: {loaded.message}
            </p>
            <button type="button" className="secondary" onClick={() => setAttempt((n) => n + 1)}>
              Try again
            </button>
          </>
        )}
        <Suspense fallback={<p role="status">Loading the form…</p>}>
          {loaded.kind === 'market' && (
            <MiniAppRunner
              actions={loaded.actions}
              uiSchemas={loaded.ui}
              deviceName={device?.name ?? 'device'}
              blocked={blocked}
              run={run}
              onFinished={reloadAccount}
              runs={runs}
              runKey={runKey}
              models={models}
              {...(files ? { files } : {})}
            />
          )}
          {loaded.kind === 'local' && (
            <MiniAppRunner
              freeform
              actions={{}}
              deviceName={device?.name ?? 'device'}
              blocked={blocked}
              run={run}
              onFinished={reloadAccount}
              runs={runs}
              runKey={runKey}
              models={models}
            />
          )}
        </Suspense>
      </section>
    </>
  );
}
