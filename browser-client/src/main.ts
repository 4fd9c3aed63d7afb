/**
 * The page: sign in, pick a device, run the example app's action and watch its output
 * stream in. Plain DOM for now; every piece of text from the network goes through
 * `textContent` / text nodes, never HTML.
 */

import './style.css';
import { RelayClient, RemoteError, TransportError, errorMessage } from './tunnel/client';

/** The example app and action the page runs. */
const APP_ID = 'hello-ai';
const ACTION = 'write';

/** POST /api/auth/login (and /refresh) → 200. */
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
  signout: byId('signout', HTMLButtonElement),
  signinSection: byId('signin-section', HTMLElement),
  signinForm: byId('signin-form', HTMLFormElement),
  email: byId('email', HTMLInputElement),
  password: byId('password', HTMLInputElement),
  signin: byId('signin', HTMLButtonElement),
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
    refreshing ??= (async () => {
      try {
        const res = await api<LoginResponse>('/api/auth/refresh', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ refresh_token: refreshToken }),
        });
        remember(res);
      } finally {
        refreshing = null;
      }
    })();
    await refreshing;
  }
  if (!auth) throw new ApiError(401, 'not signed in');
  return auth.token;
}
/** The relay session, opened on the first run. */
let relay: RelayClient | null = null;
let connecting: Promise<RelayClient> | null = null;
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
  void signIn();
});

async function signIn(): Promise<void> {
  const email = ui.email.value.trim();
  const password = ui.password.value;
  if (!email || !password) {
    showSigninError('Enter your email and password.');
    (email ? ui.password : ui.email).focus();
    return;
  }
  showSigninError('');
  ui.signin.disabled = true;
  try {
    const res = await api<LoginResponse>('/api/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email, password }),
    });
    remember(res);
    ui.password.value = '';
    ui.signedInAs.textContent = `Signed in as ${res.email}`;
    ui.signinSection.hidden = true;
    ui.account.hidden = false;
    ui.app.hidden = false;
    ui.device.focus();
    await loadDevices();
  } catch (err) {
    showSigninError(errorMessage(err));
    ui.password.focus();
  } finally {
    ui.signin.disabled = false;
  }
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
  running?.abort();
  relay?.close('signed out');
  relay = null;
  auth = null;
  ui.device.replaceChildren();
  ui.output.textContent = '';
  ui.status.textContent = '';
  ui.devicesStatus.textContent = '';
  setConnection('not connected');
  ui.app.hidden = true;
  ui.account.hidden = true;
  ui.signinSection.hidden = false;
  ui.email.focus();
});

// --- devices --------------------------------------------------------------------------

ui.refresh.addEventListener('click', () => void loadDevices());

async function loadDevices(): Promise<void> {
  ui.refresh.disabled = true;
  ui.devicesStatus.textContent = 'Loading devices…';
  try {
    const devices = await api<Device[]>('/api/devices');
    const previous = ui.device.value;
    ui.device.replaceChildren(
      ...devices.map(
        (d) => new Option(`${d.name} (${d.online ? 'online' : 'offline'})`, d.id),
      ),
    );
    if (devices.some((d) => d.id === previous)) {
      ui.device.value = previous;
    } else {
      const firstOnline = devices.find((d) => d.online);
      if (firstOnline) ui.device.value = firstOnline.id;
    }
    const online = devices.filter((d) => d.online).length;
    ui.devicesStatus.textContent =
      devices.length === 0
        ? 'No devices yet: sign in on your desktop with the desktop node.'
        : `${devices.length} device${devices.length === 1 ? '' : 's'}, ${online} online.`;
  } catch (err) {
    ui.devicesStatus.textContent = `Could not load devices: ${errorMessage(err)}`;
  } finally {
    ui.refresh.disabled = false;
  }
}

// --- relay connection -----------------------------------------------------------------

function setConnection(text: string): void {
  ui.connection.textContent = text;
}

/** The open relay session, connecting on first use. */
function getRelay(): Promise<RelayClient> {
  if (relay && !relay.isClosed) return Promise.resolve(relay);
  connecting ??= (async () => {
    setConnection('connecting…');
    try {
      const info = await api<SessionInfo>('/api/session');
      const client = await RelayClient.connect(info.webtransport_url, info.cert_sha256 ?? []);
      relay = client;
      setConnection('connected');
      void client.closed.then((closed) => {
        if (relay !== client) return; // replaced or signed out
        relay = null;
        setConnection(
          closed.clean
            ? `closed${closed.reason ? `: ${closed.reason}` : ''}`
            : `connection lost: ${closed.reason}`,
        );
      });
      return client;
    } catch (err) {
      setConnection(`connection failed: ${errorMessage(err)}`);
      throw err;
    } finally {
      connecting = null;
    }
  })();
  return connecting;
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
