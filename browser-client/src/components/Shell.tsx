/**
 * The signed-in app: a header with navigation and the account, a sidebar with the
 * devices (online/offline, live from DEVICE_STATUS) and the plan's usage, and the current
 * screen. Owns the relay session, the device list, the account and the runs (which
 * outlive the screens).
 */

import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import type { Account, Api, Device } from '../lib/api';
import { describeError } from '../lib/errors';
import { PairingBanner } from '../e2e/PairingBanner';
import { routeHref, useRoute, type Route } from '../lib/route';
import { RunStore } from '../lib/runs';
import { RelaySession, type SessionState } from '../lib/session';
import { transportLabel, useTransportKind } from '../tunnel/transport/useTransport';
import { AppContext, type AppContextValue } from './context';
import { AccountPage } from './Account';
import { ActivatePage } from './Activate';
import { AddDesktop } from './AddDesktop';
import { AppDetail } from './AppDetail';
import { DevicesPage } from './Devices';
import { HistoryPage } from './History';
import { Marketplace } from './Marketplace';
import { RunnerPage } from './Runner';
import { Workspace } from './Workspace';

/** "Free plan · 1/3 devices · 4/500 actions today". */
export function planText(account: Account): string {
  const { plan, usage } = account;
  return (
    `${plan.name} plan · ${usage.devices}/${plan.max_devices} devices · ` +
    `${usage.actions_today}/${plan.max_actions_per_day} actions today`
  );
}

function sessionText(s: SessionState): string {
  switch (s.kind) {
    case 'idle':
    case 'stopped':
      return 'not connected';
    case 'connecting':
      return 'connecting…';
    case 'connected':
      return 'connected';
    case 'retrying':
      return `${s.reason} (retrying in ${Math.max(1, Math.round(s.inMs / 1000))} s)`;
  }
}

export function Shell({ api }: { api: Api }) {
  const route = useRoute();
  const [devices, setDevices] = useState<Device[]>([]);
  const [devicesLoading, setDevicesLoading] = useState(true);
  const [devicesError, setDevicesError] = useState('');
  const [chosen, setChosen] = useState<string | null>(null);
  const [account, setAccount] = useState<Account | null>(null);
  const [accountError, setAccountError] = useState('');
  const [sessionState, setSessionState] = useState<SessionState>({ kind: 'idle' });
  const transport = useTransportKind();
  const [runs] = useState(() => new RunStore());
  const [appNames, setAppNames] = useState<Record<string, string>>({});

  /** What the device-status stream said, by id: fresher than a list read before the last push. */
  const live = useRef(new Map<string, { online: boolean; nodeVersion: string }>());
  /** Ids the stream reported that the list lacks, already reloaded for once. */
  const asked = useRef(new Set<string>());
  const loadSeq = useRef(0);
  const accountSeq = useRef(0);

  const reloadDevices = useCallback(() => {
    const seq = ++loadSeq.current;
    void api.devices().then(
      (list) => {
        if (seq !== loadSeq.current) return;
        for (const d of list) {
          const pushed = live.current.get(d.id);
          if (pushed) Object.assign(d, { online: pushed.online, node_version: pushed.nodeVersion || d.node_version });
        }
        setDevices(list);
        setDevicesError('');
        setDevicesLoading(false);
      },
      (err: unknown) => {
        if (seq !== loadSeq.current) return;
        setDevicesError(describeError(err).message);
        setDevicesLoading(false);
      },
    );
  }, [api]);

  const reloadAccount = useCallback(() => {
    const seq = ++accountSeq.current;
    void api.account().then(
      (a) => {
        if (seq !== accountSeq.current) return;
        setAccount(a);
        setAccountError('');
      },
      (err: unknown) => {
        if (seq === accountSeq.current) setAccountError(describeError(err).message);
      },
    );
  }, [api]);

  const devicesRef = useRef(devices);
  devicesRef.current = devices;

  const session = useMemo(
    () =>
      new RelaySession({
        sessionInfo: () => api.sessionInfo(),
        token: () => api.accessToken(),
        onState: setSessionState,
        onDeviceStatus: (deviceId, online, nodeVersion) => {
          live.current.set(deviceId, { online, nodeVersion });
          if (!devicesRef.current.some((d) => d.id === deviceId) && !asked.current.has(deviceId)) {
            // A device this page has not listed yet (just enrolled): reload the list.
            asked.current.add(deviceId);
            reloadDevices();
            reloadAccount();
          }
          setDevices((list) =>
            list.map((d) =>
              d.id === deviceId ? { ...d, online, node_version: nodeVersion || d.node_version } : d,
            ),
          );
        },
        onSnapshotEnd: (count) => {
          if (count !== 0) return; // the list (with names) comes from the API
          // The relay says this user has no devices: show that now rather than
          // "Loading devices…" while the list request is still on its way.
          loadSeq.current++;
          setDevices([]);
          setDevicesError('');
          setDevicesLoading(false);
        },
      }),
    [api, reloadDevices, reloadAccount],
  );

  useEffect(() => {
    reloadDevices();
    reloadAccount();
    session.start();
    const unsubscribe = api.subscribe((e) => {
      if (e === 'token-refreshed') session.tokenRefreshed();
    });
    return () => {
      unsubscribe();
      session.stop();
    };
  }, [api, session, reloadDevices, reloadAccount]);

  // Signing out (this shell goes) stops every run.
  useEffect(() => () => runs.abortAll(), [runs]);

  // Names for the apps' ids (the marketplace's list; an app not in it keeps its id).
  useEffect(() => {
    let stale = false;
    api.marketApps?.('', '').then(
      (list) => !stale && setAppNames(Object.fromEntries(list.map((a) => [a.id, a.name]))),
      () => undefined,
    );
    return () => {
      stale = true;
    };
  }, [api]);

  const device = devices.find((d) => d.id === chosen) ?? devices.find((d) => d.online) ?? devices[0] ?? null;

  const value: AppContextValue = {
    api,
    session,
    devices,
    devicesLoading,
    devicesError,
    device,
    selectDevice: setChosen,
    reloadDevices,
    account,
    reloadAccount,
    runs,
    appNames,
  };

  // Move focus to the new screen's heading when the route changes (not on first load).
  const mainRef = useRef<HTMLElement>(null);
  const firstRoute = useRef(true);
  useEffect(() => {
    if (firstRoute.current) {
      firstRoute.current = false;
      return;
    }
    mainRef.current?.querySelector<HTMLElement>('h2')?.focus();
  }, [route]);

  const online = devices.filter((d) => d.online).length;
  const summary = devicesLoading
    ? 'Loading devices…'
    : devices.length === 0
      ? 'No devices yet.'
      : `${devices.length} device${devices.length === 1 ? '' : 's'}, ${online} online.`;

  return (
    <AppContext.Provider value={value}>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <h1>AI SuperApp</h1>
        <nav aria-label="Main">
          <ul className="nav">
            <NavLink route={{ page: 'workspace' }} current={route.page === 'workspace' || route.page === 'run'}>
              Workspace
            </NavLink>
            <NavLink route={{ page: 'marketplace' }} current={route.page === 'marketplace' || route.page === 'app'}>
              Marketplace
            </NavLink>
            <NavLink route={{ page: 'devices' }} current={route.page === 'devices' || route.page === 'add-desktop'}>
              Devices
            </NavLink>
            <NavLink route={{ page: 'history' }} current={route.page === 'history'}>
              History
            </NavLink>
            <NavLink route={{ page: 'account' }} current={route.page === 'account'}>
              Account
            </NavLink>
          </ul>
        </nav>
        <div className="account">
          <span id="signed-in-as">Signed in as {api.user?.email}</span>
          <button type="button" className="secondary" onClick={() => void api.signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <div className="layout">
        <aside className="sidebar" aria-label="Devices and plan">
          <section aria-labelledby="sidebar-devices">
            <h2 id="sidebar-devices" className="sidebar-title">
              Devices
            </h2>
            <ul className="device-list" aria-label="Your devices">
              {devices.map((d) => (
                <li key={d.id}>
                  <button
                    type="button"
                    className={`device-button${device?.id === d.id ? ' chosen' : ''}`}
                    aria-pressed={device?.id === d.id}
                    onClick={() => setChosen(d.id)}
                    data-device={d.name}
                  >
                    <span className="device-name">{d.name}</span>{' '}
                    <span className={`badge ${d.online ? 'online' : 'offline'}`}>{d.online ? 'online' : 'offline'}</span>
                  </button>
                </li>
              ))}
            </ul>
            <p id="devices-status" className="muted" role="status">
              {devicesError ? `Could not load devices: ${devicesError}` : summary}
            </p>
            {!devicesLoading && devices.length === 0 && (
              <p>
                <a href={routeHref({ page: 'add-desktop' })}>Add a desktop</a>
              </p>
            )}
            <button type="button" className="secondary small" onClick={reloadDevices}>
              Refresh devices
            </button>
          </section>
          <section aria-labelledby="sidebar-plan">
            <h2 id="sidebar-plan" className="sidebar-title">
              Plan
            </h2>
            <p id="plan" className="plan">
              {account ? planText(account) : accountError ? `Plan unavailable: ${accountError}` : ''}
            </p>
          </section>
          <p className="muted small-text">
            Relay: <span id="connection">{sessionText(sessionState)}</span>
            {transport && sessionState.kind === 'connected' && (
              <span id="transport" data-transport={transport} title={transportLabel(transport).title}>
                {' · '}
                {transportLabel(transport).text}
              </span>
            )}
          </p>
        </aside>
        <main id="main" ref={mainRef} tabIndex={-1}>
          <PairingBanner />
          <Screen route={route} />
        </main>
      </div>
    </AppContext.Provider>
  );
}

function NavLink({ route, current, children }: { route: Route; current: boolean; children: string }) {
  return (
    <li>
      <a href={routeHref(route)} aria-current={current ? 'page' : undefined}>
        {children}
      </a>
    </li>
  );
}

function Screen({ route }: { route: Route }): React.JSX.Element {
  switch (route.page) {
    case 'devices':
      return <DevicesPage />;
    case 'history':
      return <HistoryPage />;
    case 'account':
      return <AccountPage />;
    case 'add-desktop':
      return <AddDesktop />;
    case 'activate':
      return <ActivatePage key={route.code} code={route.code} />;
    case 'workspace':
      return <Workspace />;
    case 'marketplace':
      return <Marketplace />;
    case 'app':
      return <AppDetail key={route.appId} appId={route.appId} />;
    case 'run':
      return <RunnerPage key={route.appId} appId={route.appId} />;
  }
}
