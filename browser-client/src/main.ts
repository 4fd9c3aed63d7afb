/**
 * The page: sign in (or create an account), pick a device, whose online status updates
 * live over a device-status stream, run the example app's action and watch its output
 * stream in; the header shows the plan and its usage. Plain DOM for now; every piece of
 * text from the network goes through `textContent` / text nodes, never HTML.
 */

import './style.css';
import { RelayClient, RemoteError, TransportError, errorMessage } from './tunnel/client';

/** The example app and action the page runs. */
const APP_ID = 'hello-ai';
const ACTION = 'write';

/** POST /api/auth/login (and /refresh) → 200, POST /api/auth/signup → 201. */
interface LoginResponse {
  token: string;
  refresh_token: string;
  expires_in: number;
  user_id: string;
  email: string;
}

/** One entry of GET /api/devices. */
interface Device {
  id: string;
  name: string;
  online: boolean;
  node_version: string | null;
  last_seen: string | null;
}

/** GET /api/account. */
interface Account {
  user_id: string;
  email: string;
  plan: {
    id: string;
    name: string;
    max_devices: number;
    max_concurrent_streams: number;
    max_actions_per_day: number;
  };
  usage: { devices: number; actions_today: number; open_streams: number };
}

/** GET /api/session. */
interface SessionInfo {
  webtransport_url: string;
  cert_sha256: string[];
}

/** A non-2xx answer (or no answer) from the HTTP API. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  get code(): string {
    return this.status === 0 ? 'network' : `http_${this.status}`;
  }
}

/** Finds an element by id and checks its type, so a broken page fails loudly at start. */
function byId<T extends HTMLElement>(id: string, type: { new (): T; prototype: T }): T {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`page is missing #${id}`);
  return found;
}

const ui = {
  account: byId('account', HTMLDivElement),
  signedInAs: byId('signed-in-as', HTMLSpanElement),
  plan: byId('plan', HTMLSpanElement),
  signout: byId('signout', HTMLButtonElement),
  signinSection: byId('signin-section', HTMLElement),
  signinForm: byId('signin-form', HTMLFormElement),
  email: byId('email', HTMLInputElement),
  password: byId('password', HTMLInputElement),
  signin: byId('signin', HTMLButtonElement),
  signup: byId('signup', HTMLButtonElement),
  signinError: byId('signin-error', HTMLParagraphElement),
  app: byId('app', HTMLDivElement),
  device: byId('device', HTMLSelectElement),
  refresh: byId('refresh', HTMLButtonElement),
  devicesStatus: byId('devices-status', HTMLParagraphElement),
  connection: byId('connection', HTMLSpanElement),
  actionForm: byId('action-form', HTMLFormElement),
  topic: byId('topic', HTMLInputElement),
  run: byId('run', HTMLButtonElement),
  cancel: byId('cancel', HTMLButtonElement),
  status: byId('status', HTMLParagraphElement),
  output: byId('output', HTMLPreElement),
};

/** The signed-in user, or null. Tokens live in memory only. */
let auth: { token: string; refreshToken: string; expiresAt: number; userId: string; email: string } | null =
  null;
/** A refresh in flight, shared by every caller that needs a fresh token. */
let refreshing: Promise<void> | null = null;
/**
 * Counts sign-ins and sign-outs, so that work started for one signed-in user and
 * finishing after a sign-out (or a later sign-in) changes nothing.
 */
let epoch = 0;

/** Remembers a login or refresh answer. */
function remember(res: LoginResponse): void {
  auth = {
    token: res.token,
    refreshToken: res.refresh_token,
    // Refresh a minute early, so a token never expires mid-request.
    expiresAt: Date.now() + Math.max(0, res.expires_in - 60) * 1000,
    userId: res.user_id,
    email: res.email,
  };
}

/** The access token, refreshed first when it is about to expire. */
async function accessToken(): Promise<string> {
  if (!auth) throw new ApiError(401, 'not signed in');
  if (Date.now() >= auth.expiresAt) {
    const refreshToken = auth.refreshToken;
    const started = epoch;
    refreshing ??= (async () => {
      try {
        const res = await api<LoginResponse>('/api/auth/refresh', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ refresh_token: refreshToken }),
        });
        if (epoch !== started) return; // signed out meanwhile: stay signed out
        remember(res);
        tokenRefreshed();
      } finally {
        refreshing = null;
      }
    })();
    await refreshing;
  }
  if (!auth) throw new ApiError(401, 'not signed in');
  return auth.token;
}
/** The relay session, opened at sign-in (or on the next run) and reopened when lost. */
let relay: RelayClient | null = null;
let connecting: Promise<RelayClient> | null = null;
/** A scheduled reconnect after the session was lost, and how many attempts failed. */
let reconnectTimer: ReturnType<typeof setTimeout> | undefined;
let reconnectFailures = 0;
/** The running action's controller, or null when idle. */
let running: AbortController | null = null;

/** Calls the HTTP API; returns the parsed JSON body or throws an {@link ApiError}. */
async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  headers.set('Accept', 'application/json');
  if (auth && !path.startsWith('/api/auth/')) headers.set('Authorization', `Bearer ${await accessToken()}`);
  let res: Response;
  try {
    res = await fetch(path, { ...init, headers });
  } catch (err) {
    throw new ApiError(0, `could not reach the server: ${errorMessage(err)}`);
  }
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: fall through with the status only.
  }
  if (!res.ok) {
    const message =
      body && typeof body === 'object' && 'error' in body && typeof body.error === 'string'
        ? body.error
        : `request failed with HTTP ${res.status}`;
    throw new ApiError(res.status, message);
  }
  return body as T;
}

// --- sign-in --------------------------------------------------------------------------

ui.signinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  void signIn('login');
});

ui.signup.addEventListener('click', () => void signIn('signup'));

/** The shortest password the relay accepts for a new account. */
const MIN_NEW_PASSWORD = 8;

/** Signs in with the form's email and password, or first creates the account. */
async function signIn(how: 'login' | 'signup'): Promise<void> {
  if (ui.signin.disabled) return; // one attempt at a time
  const email = ui.email.value.trim();
  const password = ui.password.value;
  if (!email || !password) {
    showSigninError('Enter your email and password.');
    (email ? ui.password : ui.email).focus();
    return;
  }
  if (how === 'signup' && password.length < MIN_NEW_PASSWORD) {
    showSigninError(`A new account needs a password of at least ${MIN_NEW_PASSWORD} characters.`);
    ui.password.focus();
    return;
  }
  showSigninError('');
  ui.signin.disabled = true;
  ui.signup.disabled = true;
  let res: LoginResponse;
  try {
    res = await api<LoginResponse>(how === 'signup' ? '/api/auth/signup' : '/api/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email, password }),
    });
  } catch (err) {
    showSigninError(errorMessage(err));
    ui.password.focus();
    return;
  } finally {
    ui.signin.disabled = false;
    ui.signup.disabled = false;
  }
  epoch++;
  remember(res);
  ui.password.value = '';
  ui.signedInAs.textContent = `Signed in as ${res.email}`;
  ui.plan.textContent = '';
  ui.signinSection.hidden = true;
  ui.account.hidden = false;
  ui.app.hidden = false;
  ui.device.focus();
  void loadAccount();
  const started = epoch;
  await loadDevices();
  // Then the relay session, which starts the live device status.
  if (epoch === started) void getRelay().catch(() => undefined);
}

function showSigninError(message: string): void {
  ui.signinError.textContent = message;
}

ui.signout.addEventListener('click', () => {
  if (auth) {
    // Revoke the refresh token; the short-lived access token simply expires.
    void api('/api/auth/logout', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: auth.refreshToken }),
    }).catch(() => undefined);
  }
  epoch++;
  running?.abort();
  stopWatch();
  clearTimeout(reconnectTimer);
  reconnectTimer = undefined;
  reconnectFailures = 0;
  connecting = null;
  relay?.close('signed out');
  relay = null;
  auth = null;
  devices = [];
  unknownIds.clear();
  ignoredIds.clear();
  ui.device.replaceChildren();
  ui.output.textContent = '';
  ui.status.textContent = '';
  ui.devicesStatus.textContent = '';
  ui.plan.textContent = '';
  setConnection('not connected');
  ui.app.hidden = true;
  ui.account.hidden = true;
  ui.signinSection.hidden = false;
  ui.email.focus();
});

// --- devices --------------------------------------------------------------------------

/**
 * The devices as GET /api/devices last listed them, in the select's order, with online
 * state and version updated by the live device-status stream.
 */
let devices: Device[] = [];
/**
 * What the live device-status stream has said, by device id: while it is open, fresher
 * than a list that GET /api/devices answers (the list may have been read before the last
 * change was pushed). Emptied when the stream ends.
 */
const live = new Map<string, { online: boolean; nodeVersion: string }>();
/** Ids the stream reported that the list lacks; the list is reloaded for them. */
const unknownIds = new Set<string>();
/** Ids still missing after a reload (e.g. just revoked): no further reloads for them. */
const ignoredIds = new Set<string>();
/** The list load in flight, and whether another one was asked for meanwhile. */
let loading: Promise<void> | null = null;
let reloadQueued = false;

ui.refresh.addEventListener('click', () => {
  ignoredIds.clear();
  void loadDevices();
});

/** Reloads the device list; a call while a load is running queues one more load. */
function loadDevices(): Promise<void> {
  if (loading) {
    reloadQueued = true;
    return loading;
  }
  loading = (async () => {
    try {
      do {
        reloadQueued = false;
        await fetchDevices();
      } while (reloadQueued && auth);
    } finally {
      loading = null;
    }
  })();
  return loading;
}

async function fetchDevices(): Promise<void> {
  const started = epoch;
  const asked = new Set(unknownIds);
  ui.refresh.disabled = true;
  ui.devicesStatus.textContent = 'Loading devices…';
  try {
    const list = await api<Device[]>('/api/devices');
    if (epoch !== started) return;
    for (const d of list) {
      const pushed = live.get(d.id);
      if (pushed) Object.assign(d, { online: pushed.online, node_version: pushed.nodeVersion || d.node_version });
    }
    devices = list;
    for (const id of asked) {
      unknownIds.delete(id);
      if (!list.some((d) => d.id === id)) ignoredIds.add(id);
    }
    const previous = ui.device.value;
    ui.device.replaceChildren(
      ...list.map((d) => {
        const option = document.createElement('option');
        option.value = d.id;
        option.textContent = deviceLabel(d);
        return option;
      }),
    );
    if (list.some((d) => d.id === previous)) {
      ui.device.value = previous;
    } else {
      const firstOnline = list.find((d) => d.online);
      if (firstOnline) ui.device.value = firstOnline.id;
    }
    showDeviceSummary();
  } catch (err) {
    if (epoch !== started) return;
    ui.devicesStatus.textContent = `Could not load devices: ${errorMessage(err)}`;
  } finally {
    ui.refresh.disabled = false;
  }
}

/** A device's option text: "name (online)" / "name (offline)". */
function deviceLabel(d: Device): string {
  return `${d.name} (${d.online ? 'online' : 'offline'})`;
}

/** Updates #devices-status (a polite live region) when its text changes. */
function showDeviceSummary(): void {
  const online = devices.filter((d) => d.online).length;
  const text =
    devices.length === 0
      ? 'No devices yet: sign in on your desktop with the desktop node.'
      : `${devices.length} device${devices.length === 1 ? '' : 's'}, ${online} online.`;
  if (ui.devicesStatus.textContent !== text) ui.devicesStatus.textContent = text;
}

/** Updates every option's text and the summary from `devices`. */
function showDeviceStates(): void {
  for (const option of Array.from(ui.device.options)) {
    const device = devices.find((d) => d.id === option.value);
    if (!device) continue;
    const text = deviceLabel(device);
    if (option.textContent !== text) option.textContent = text;
  }
  showDeviceSummary();
}

// --- live device status ---------------------------------------------------------------

/** The open device-status watch, with the session and token it was opened with. */
let watch: { controller: AbortController; client: RelayClient; token: string } | null = null;
/** Bumped by every start and stop, so that a superseded watch changes nothing. */
let watchGen = 0;
let watchRetryTimer: ReturnType<typeof setTimeout> | undefined;
/** Watches in a row that ended without reporting anything (for the retry delay). */
let watchFailures = 0;

/** Stops the device-status watch and forgets what it reported. */
function stopWatch(): void {
  watchGen++;
  clearTimeout(watchRetryTimer);
  watchRetryTimer = undefined;
  watch?.controller.abort();
  watch = null;
  live.clear(); // `devices` keeps the last state pushed
}

/** (Re)starts the device-status watch on `client`; it keeps itself going until stopped. */
async function startWatch(client: RelayClient): Promise<void> {
  stopWatch();
  const gen = watchGen;
  const current = (): boolean => gen === watchGen && relay === client && !client.isClosed;
  let token: string;
  try {
    token = await accessToken();
  } catch (err) {
    if (!current()) return;
    console.warn(`device status: no token: ${errorMessage(err)}`);
    retryWatch(client, gen);
    return;
  }
  if (!current()) return;
  const controller = new AbortController();
  watch = { controller, client, token };
  try {
    await client.watchDevices({
      token,
      signal: controller.signal,
      onStatus: (deviceId, online, nodeVersion) => {
        if (gen === watchGen) deviceStatus(deviceId, online, nodeVersion);
      },
    });
    if (!current() || controller.signal.aborted) return;
    // The relay finished the stream (e.g. this page read too slowly): open a new one,
    // which starts with a fresh snapshot.
  } catch (err) {
    if (!current() || controller.signal.aborted) return;
    console.warn(`device status stream failed: ${errorMessage(err)}`);
    // A lost session is reconnected by getRelay's close handler, which restarts this.
    if (err instanceof TransportError && err.code === 'session_closed') return;
  }
  if (watch?.controller === controller) watch = null;
  retryWatch(client, gen);
}

/** Restarts the watch after a delay that grows while watches keep failing. */
function retryWatch(client: RelayClient, gen: number): void {
  if (gen !== watchGen) return;
  const delay = backoff(watchFailures++);
  clearTimeout(watchRetryTimer);
  watchRetryTimer = setTimeout(() => {
    watchRetryTimer = undefined;
    if (gen === watchGen && relay === client && !client.isClosed && auth) void startWatch(client);
  }, delay);
}

/** A new access token: reopen the watch with it (the relay checks it when a stream opens). */
function tokenRefreshed(): void {
  if (watch && auth && watch.token !== auth.token && relay === watch.client) void startWatch(watch.client);
}

/** One DEVICE_STATUS from the watch. */
function deviceStatus(deviceId: string, online: boolean, nodeVersion: string): void {
  watchFailures = 0;
  live.set(deviceId, { online, nodeVersion });
  const device = devices.find((d) => d.id === deviceId);
  if (device) {
    device.online = online;
    if (nodeVersion) device.node_version = nodeVersion;
    showDeviceStates();
  } else if (!ignoredIds.has(deviceId) && !unknownIds.has(deviceId)) {
    // A device this page has not listed yet (just enrolled): reload the list.
    unknownIds.add(deviceId);
    void loadDevices();
    void loadAccount();
  }
}

/** Milliseconds to wait before retry number `failures` (0-based): 1 s doubling to 30 s, ±20 %. */
function backoff(failures: number): number {
  const base = Math.min(30_000, 1_000 * 2 ** Math.min(failures, 5));
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

// --- plan and usage -------------------------------------------------------------------

/** Bumped by every load, so that only the latest answer is shown. */
let accountSeq = 0;

/** Loads GET /api/account into #plan: "Free plan · 1/3 devices · 4/500 actions today". */
async function loadAccount(): Promise<void> {
  if (!auth) return;
  const seq = ++accountSeq;
  const started = epoch;
  try {
    const account = await api<Account>('/api/account');
    if (seq !== accountSeq || epoch !== started) return;
    const { plan, usage } = account;
    ui.plan.textContent =
      `${plan.name} plan · ${usage.devices}/${plan.max_devices} devices · ` +
      `${usage.actions_today}/${plan.max_actions_per_day} actions today`;
  } catch (err) {
    if (seq !== accountSeq || epoch !== started) return;
    ui.plan.textContent = `Plan unavailable: ${errorMessage(err)}`;
  }
}

// --- relay connection -----------------------------------------------------------------

function setConnection(text: string): void {
  ui.connection.textContent = text;
}

/**
 * The open relay session, connecting when there is none. Every new session starts the
 * device-status watch; a lost one is reconnected after a delay while signed in.
 */
function getRelay(): Promise<RelayClient> {
  if (relay && !relay.isClosed) return Promise.resolve(relay);
  if (connecting) return connecting;
  const started = epoch;
  const attempt = (async () => {
    setConnection('connecting…');
    try {
      const info = await api<SessionInfo>('/api/session');
      const client = await RelayClient.connect(info.webtransport_url, info.cert_sha256 ?? []);
      if (epoch !== started) {
        client.close('signed out');
        throw new ApiError(401, 'signed out');
      }
      relay = client;
      reconnectFailures = 0;
      clearTimeout(reconnectTimer);
      reconnectTimer = undefined;
      setConnection('connected');
      void client.closed.then((closed) => {
        if (relay !== client) return; // replaced or signed out
        relay = null;
        stopWatch();
        const what = closed.clean
          ? `closed${closed.reason ? `: ${closed.reason}` : ''}`
          : `connection lost: ${closed.reason}`;
        setConnection(what);
        scheduleReconnect(what);
      });
      void startWatch(client);
      return client;
    } catch (err) {
      if (epoch === started) {
        const what = `connection failed: ${errorMessage(err)}`;
        setConnection(what);
        scheduleReconnect(what);
      }
      throw err;
    }
  })();
  connecting = attempt;
  void attempt
    .finally(() => {
      if (connecting === attempt) connecting = null;
    })
    .catch(() => undefined);
  return attempt;
}

/** Reconnects later while signed in, so that device status keeps coming. */
function scheduleReconnect(what: string): void {
  if (!auth || reconnectTimer !== undefined) return;
  if (typeof WebTransport === 'undefined') return; // retrying cannot help
  const delay = backoff(reconnectFailures++);
  setConnection(`${what} (retrying in ${Math.max(1, Math.round(delay / 1000))} s)`);
  const started = epoch;
  reconnectTimer = setTimeout(() => {
    reconnectTimer = undefined;
    if (epoch === started && auth && !relay) void getRelay().catch(() => undefined);
  }, delay);
}

// --- the action -----------------------------------------------------------------------

ui.actionForm.addEventListener('submit', (event) => {
  event.preventDefault();
  void runAction();
});

ui.cancel.addEventListener('click', () => cancelAction());

document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && running) cancelAction();
});

function cancelAction(): void {
  if (!running || running.signal.aborted) return;
  setStatus('cancelling…');
  running.abort();
}

function setStatus(text: string): void {
  ui.status.textContent = text;
}

function setRunning(controller: AbortController | null): void {
  running = controller;
  ui.run.disabled = controller !== null;
  ui.cancel.disabled = controller === null;
}

async function runAction(): Promise<void> {
  if (running || !auth) return;
  const deviceId = ui.device.value;
  if (!deviceId) {
    setStatus('error: choose a device first');
    ui.device.focus();
    return;
  }
  const topic = ui.topic.value.trim();
  if (!topic) {
    setStatus('error: enter a topic');
    ui.topic.focus();
    return;
  }

  const controller = new AbortController();
  setRunning(controller);
  ui.output.textContent = '';
  setStatus('running…');
  try {
    const client = await getRelay();
    const result = await client.runAction({
      deviceId,
      token: await accessToken(),
      appId: APP_ID,
      action: ACTION,
      payload: JSON.stringify({ topic }),
      signal: controller.signal,
      onChunk: (data) => ui.output.append(data), // a text node, never parsed as HTML
    });
    setStatus(`done: ${result.chunks} chunks in ${result.elapsedMs} ms`);
  } catch (err) {
    setStatus(describeFailure(err));
  } finally {
    const hadFocus = document.activeElement === ui.cancel;
    setRunning(null);
    if (hadFocus) ui.run.focus();
    void loadAccount(); // the action counts against today's actions
  }
}

/** The #status text for a failed run. */
function describeFailure(err: unknown): string {
  if (err instanceof RemoteError && err.code === 'cancelled') return 'cancelled';
  if (err instanceof DOMException && err.name === 'AbortError') return 'cancelled';
  if (err instanceof RemoteError || err instanceof TransportError || err instanceof ApiError) {
    return `error [${err.code}]: ${err.message}`;
  }
  return `error [internal]: ${errorMessage(err)}`;
}
