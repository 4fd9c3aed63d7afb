/**
 * The relay's HTTP API: accounts (sign-up, sign-in with short-lived access tokens and
 * single-use refresh tokens, sign-out, sessions, password, deletion, sign-in methods), devices (list,
 * rename, remove, device login approval), the plan and usage, the WebTransport
 * session's address, and the marketplace (docs/relay.md).
 *
 * The access token lives in memory only. The refresh token lives in an HttpOnly cookie
 * the relay sets (`aisa_refresh`, path `/api/auth`): this page never sees it, and a
 * reload, a new tab or a deep link signs in again with one `POST /api/auth/refresh`
 * ({@link Api.restore}). Tabs refresh one at a time (a Web Lock), since each refresh
 * replaces the cookie they share, and tell each other when they sign in or out (a
 * BroadcastChannel).
 */

import type { SignInMethods } from './account';
import { errorMessage } from '../tunnel/client';

/** POST /api/auth/login (and /refresh) → 200, POST /api/auth/signup → 201. */
export interface LoginResponse {
  token: string;
  /** Absent when the relay put it in the cookie (the web app always asks for that). */
  refresh_token?: string;
  expires_in: number;
  user_id: string;
  email: string;
}

/** One entry of GET /api/devices. */
export interface Device {
  id: string;
  name: string;
  online: boolean;
  node_version: string | null;
  /** Seconds since the epoch (the relay's unit), or null when never seen. */
  last_seen: number | null;
}

/** One entry of GET /api/auth/sessions. */
export interface SessionEntry {
  id: string;
  /** Seconds since the epoch. */
  started_at: number;
  /** Seconds since the epoch. */
  last_active: number;
  user_agent: string | null;
  /** The session of this browser. */
  current: boolean;
}

/** GET /api/device/code/{code}: a desktop waiting for approval. */
export interface PendingDeviceLogin {
  user_code: string;
  name: string;
  created_at: number;
  expires_in: number;
}

/** GET /api/account. */
export interface Account {
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
  /**
   * Whether the account has a password. One made by an identity provider has none until
   * one is set: it then proves who it is by a recent sign-in at the provider. Absent
   * from older relays (read as true).
   */
  has_password?: boolean;
  /** The providers (their names in the URLs) the account signs in with. */
  providers?: string[];
  /** When this session's person last proved who they are (seconds since the epoch). */
  auth_time?: number | null;
  /** How recent that must be for an account without a password to set one or delete itself. */
  reauth_max_age_secs?: number;
}

/** GET /api/session: where to open the WebTransport session, and the certificate to pin. */
export interface SessionInfo {
  webtransport_url: string;
  cert_sha256: string[];
}

/** An app's star rating. */
export interface Rating {
  average: number;
  count: number;
}

/** One app of GET /api/marketplace/apps. */
export interface MarketApp {
  id: string;
  name: string;
  description: string;
  category: string;
  author: string | { name: string; email?: string };
  /** Null when every version is withdrawn (yanked). */
  latest_version: string | null;
  rating: Rating;
  installs: number;
}

/** One published version of an app. */
export interface MarketVersion {
  version: string;
  published_at: string | number;
  yanked: boolean;
  sha256: string;
  size: number;
  runtime: string;
}

/** What an app asks for (its `permissions.json`; every key optional, absent = not asked). */
export interface Permissions {
  ai?: boolean;
  filesystem?: { read?: string[]; write?: string[] };
  network?: string[];
  clipboard?: boolean;
}

/** GET /api/marketplace/apps/{id}: the list fields plus versions, permissions and schemas. */
export interface MarketAppDetail extends MarketApp {
  versions: MarketVersion[];
  permissions: Permissions | null;
  /** `{"<action>": <JSON Schema of its payload>}`. */
  action_schema: Record<string, Record<string, unknown>> | null;
  /** `{"<action>": <@rjsf uiSchema>}` (may be `{}`). */
  ui_schema: Record<string, Record<string, unknown>> | null;
  /** The actions in the author's order (JSON objects above lose it); older relays omit it. */
  actions?: string[];
}

/** The app's actions in the author's order: `actions` first, then any schema it misses. */
export function orderedActions(app: Pick<MarketAppDetail, 'action_schema' | 'actions'>): string[] {
  const schemas = Object.keys(app.action_schema ?? {});
  const listed = (app.actions ?? []).filter((name) => schemas.includes(name));
  return [...listed, ...schemas.filter((name) => !listed.includes(name))];
}

/** One category with the number of apps in it. */
export interface Category {
  name: string;
  count: number;
}

/** A non-2xx answer (or no answer) from the HTTP API. */
export class ApiError extends Error {
  constructor(
    /** The HTTP status; 0 when the server could not be reached. */
    readonly status: number,
    message: string,
    /**
     * The relay's own reason, when it gave one (`reauth_required`: sign in at a provider
     * again first, with `providers` the ones to choose from).
     */
    readonly reason?: { code: string; providers: string[] },
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** `network` or `http_<status>`, in the style of the wire's error codes. */
  get code(): string {
    return this.status === 0 ? 'network' : `http_${this.status}`;
  }
}

/** The signed-in user as the page knows it. */
export interface SignedIn {
  userId: string;
  email: string;
}

/** The shortest password the relay accepts for a new account. */
export const MIN_NEW_PASSWORD = 8;

/** What {@link Api} tells its listeners. */
export type ApiEvent = 'signed-in' | 'signed-out' | 'token-refreshed' | 'restored';

/** What tabs of this page tell each other. */
type TabMessage = 'signed-in' | 'signed-out';

/** The parts of the browser the API uses across tabs (absent in tests and old browsers). */
export interface TabSync {
  /** Runs `fn` while holding the page-wide lock `name` (navigator.locks). */
  lock?: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
  /** A channel to the page's other tabs. */
  channel?: { postMessage(m: TabMessage): void; onmessage: ((e: { data: TabMessage }) => void) | null };
}

/** The browser's own {@link TabSync}, where it has one. */
export function browserTabSync(): TabSync {
  const sync: TabSync = {};
  const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
  if (locks) sync.lock = (name, fn) => locks.request(name, fn);
  if (typeof BroadcastChannel !== 'undefined') {
    sync.channel = new BroadcastChannel('aisa-auth') as unknown as TabSync['channel'];
  }
  return sync;
}

/**
 * The HTTP API with the signed-in user's tokens. The access token is refreshed a minute
 * before it expires, by one refresh shared among all callers; a refresh that fails with
 * 401 signs the user out.
 */
export class Api {
  private auth: { token: string; refreshToken?: string; expiresAt: number; user: SignedIn } | null = null;
  private refreshing: Promise<void> | null = null;
  /** Counts sign-ins and sign-outs, so that a refresh finishing after a sign-out changes nothing. */
  private epoch = 0;
  private readonly listeners = new Set<(e: ApiEvent) => void>();
  /** False until {@link restore} has tried the cookie once. */
  private restoredOnce = false;

  constructor(
    private readonly fetchFn: typeof fetch = (...args) => fetch(...args),
    private readonly now: () => number = () => Date.now(),
    private readonly tabs: TabSync = {},
  ) {
    if (tabs.channel) {
      tabs.channel.onmessage = (e) => {
        // Another tab signed out: so does this one (its cookie is gone too). Another tab
        // signed in: pick the session up from the shared cookie.
        if (e.data === 'signed-out' && this.auth) this.forget();
        if (e.data === 'signed-in' && !this.auth) void this.restore();
      };
    }
  }

  /** The signed-in user, or null. */
  get user(): SignedIn | null {
    return this.auth?.user ?? null;
  }

  /** True once the first {@link restore} finished (signed in or not). */
  get restored(): boolean {
    return this.restoredOnce;
  }

  /** Runs `fn` holding the page-wide refresh lock, where the browser has one. */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    return this.tabs.lock ? this.tabs.lock('aisa-refresh', fn) : fn();
  }

  /**
   * Signs in again from the refresh cookie, if this browser has a live one (a reload, a
   * new tab, a deep link). Resolves with the user, or null when not signed in.
   */
  restore(): Promise<SignedIn | null> {
    this.restoring ??= this.restoreOnce().finally(() => {
      this.restoring = null;
    });
    return this.restoring;
  }

  private restoring: Promise<SignedIn | null> | null = null;

  private async restoreOnce(): Promise<SignedIn | null> {
    const started = this.epoch;
    try {
      const res = await this.locked(() => this.refreshWithRetry());
      if (this.epoch === started && !this.auth) {
        this.remember(res);
        this.emit('signed-in');
      }
    } catch {
      // No cookie, or a dead one: the sign-in page.
    } finally {
      if (!this.restoredOnce) {
        this.restoredOnce = true;
        this.emit('restored');
      }
    }
    return this.user;
  }

  /**
   * POST /api/auth/refresh with the cookie; once more when the relay says the cookie was
   * just used (another tab refreshed at the same moment and the jar has its new one).
   */
  private async refreshWithRetry(): Promise<LoginResponse> {
    const body = this.auth?.refreshToken ? { refresh_token: this.auth.refreshToken } : {};
    try {
      return await this.call<LoginResponse>('/api/auth/refresh', { method: 'POST', json: body });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401 && /just used/.test(err.message)) {
        return this.call<LoginResponse>('/api/auth/refresh', { method: 'POST', json: {} });
      }
      throw err;
    }
  }

  /** Calls `fn` on sign-in, sign-out and every token refresh; returns an unsubscribe function. */
  subscribe(fn: (e: ApiEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(e: ApiEvent): void {
    for (const fn of this.listeners) fn(e);
  }

  private remember(res: LoginResponse): void {
    this.auth = {
      token: res.token,
      ...(res.refresh_token ? { refreshToken: res.refresh_token } : {}),
      // Refresh a minute early, so that a token never expires mid-request.
      expiresAt: this.now() + Math.max(0, res.expires_in - 60) * 1000,
      user: { userId: res.user_id, email: res.email },
    };
  }

  /** Signs in, or first creates the account (`signup`). Throws an {@link ApiError}. */
  async signIn(how: 'login' | 'signup', email: string, password: string): Promise<SignedIn> {
    const res = await this.call<LoginResponse>(how === 'signup' ? '/api/auth/signup' : '/api/auth/login', {
      method: 'POST',
      json: { email, password, cookie: true },
    });
    this.epoch++;
    this.remember(res);
    this.emit('signed-in');
    this.tabs.channel?.postMessage('signed-in');
    return { userId: res.user_id, email: res.email };
  }

  /** Forgets the tokens here, without telling the relay (another tab did). */
  private forget(): void {
    this.epoch++;
    this.auth = null;
    this.refreshing = null;
    this.emit('signed-out');
  }

  /**
   * Signs out: the relay revokes this session's refresh token and deletes the cookie
   * (with `everywhere`, every session of the account, their access tokens too). Other
   * tabs follow.
   */
  async signOut(everywhere = false): Promise<void> {
    const auth = this.auth;
    const body = { ...(auth?.refreshToken ? { refresh_token: auth.refreshToken } : {}), everywhere };
    this.forget();
    this.tabs.channel?.postMessage('signed-out');
    await this.call('/api/auth/logout', { method: 'POST', json: body }).catch(() => undefined);
  }

  /** The access token, refreshed first when it is about to expire. */
  async accessToken(): Promise<string> {
    if (!this.auth) throw new ApiError(401, 'not signed in');
    if (this.now() >= this.auth.expiresAt) {
      const started = this.epoch;
      this.refreshing ??= (async () => {
        try {
          const res = await this.locked(() => this.refreshWithRetry());
          if (this.epoch !== started) return; // signed out meanwhile: stay signed out
          this.remember(res);
          this.emit('token-refreshed');
        } catch (err) {
          if (this.epoch === started && err instanceof ApiError && err.status === 401) this.forget();
          throw err;
        } finally {
          if (this.epoch === started) this.refreshing = null;
        }
      })();
      await this.refreshing;
    }
    if (!this.auth) throw new ApiError(401, 'not signed in');
    return this.auth.token;
  }

  /** GET /api/account. */
  account(): Promise<Account> {
    return this.call('/api/account', { auth: true });
  }

  /** GET /api/devices. */
  devices(): Promise<Device[]> {
    return this.call('/api/devices', { auth: true });
  }

  /** GET /api/auth/sessions: the account's signed-in browsers and CLIs. */
  sessions(): Promise<SessionEntry[]> {
    return this.call('/api/auth/sessions', { auth: true });
  }

  /** DELETE /api/auth/sessions/{id}: signs that session out. */
  async endSession(id: string): Promise<void> {
    await this.call(`/api/auth/sessions/${encodeURIComponent(id)}`, { method: 'DELETE', auth: true });
  }

  /**
   * POST /api/account/password: every session is signed out, this one signed in again
   * with new tokens (other tabs sign in again from the new cookie).
   */
  async changePassword(currentPassword: string | null, newPassword: string): Promise<void> {
    // No current password: an account made by an identity provider setting its first
    // one (the relay wants a recent sign-in at the provider instead).
    const current = currentPassword === null ? {} : { current_password: currentPassword };
    const res = await this.call<LoginResponse>('/api/account/password', {
      method: 'POST',
      auth: true,
      // The cookie is not sent to this path (outside /api/auth): ask for a new one.
      json: { ...current, new_password: newPassword, cookie: true },
    });
    this.remember(res);
    this.emit('token-refreshed');
  }

  /**
   * DELETE /api/account: the account, its devices and data are deleted; signs out. No
   * password for an account that has none (a recent provider sign-in proves who it is).
   */
  async deleteAccount(password: string | null): Promise<void> {
    await this.call('/api/account', { method: 'DELETE', auth: true, json: password === null ? {} : { password } });
    this.forget();
    this.tabs.channel?.postMessage('signed-out');
  }

  /** GET /api/account/identities: whether the account has a password, and its linked provider identities. */
  signInMethods(): Promise<SignInMethods> {
    return this.call('/api/account/identities', { auth: true });
  }

  /**
   * DELETE /api/account/identities/{id}: the identity no longer signs in to this account.
   * The password for an account that has one; none for one that has not (a recent
   * provider sign-in proves who it is). Never the last way in (a 409 with a sentence).
   */
  async unlinkIdentity(id: string, password: string | null): Promise<void> {
    await this.call(`/api/account/identities/${encodeURIComponent(id)}`, {
      method: 'DELETE',
      auth: true,
      json: password === null ? {} : { password },
    });
  }

  /** PATCH /api/devices/{id}. */
  async renameDevice(id: string, name: string): Promise<void> {
    await this.call(`/api/devices/${encodeURIComponent(id)}`, { method: 'PATCH', auth: true, json: { name } });
  }

  /** DELETE /api/devices/{id}: the device's token stops working and it is disconnected. */
  async removeDevice(id: string): Promise<void> {
    await this.call(`/api/devices/${encodeURIComponent(id)}`, { method: 'DELETE', auth: true });
  }

  /** GET /api/device/code/{code}: the desktop waiting with this code. */
  pendingDeviceLogin(code: string): Promise<PendingDeviceLogin> {
    return this.call(`/api/device/code/${encodeURIComponent(code)}`, { auth: true });
  }

  /** POST /api/device/approve: registers (or refuses) the waiting desktop. */
  async decideDeviceLogin(code: string, approve: boolean): Promise<void> {
    await this.call('/api/device/approve', { method: 'POST', auth: true, json: { user_code: code, approve } });
  }

  /** GET /api/session. */
  sessionInfo(): Promise<SessionInfo> {
    return this.call('/api/session', { auth: true });
  }

  /** GET /api/marketplace/apps?q=&category= */
  async marketApps(q: string, category: string): Promise<MarketApp[]> {
    const params = new URLSearchParams();
    if (q) params.set('q', q);
    if (category) params.set('category', category);
    const query = params.toString();
    const res = await this.call<{ apps: MarketApp[] }>(`/api/marketplace/apps${query ? `?${query}` : ''}`, {});
    return res.apps;
  }

  /** GET /api/marketplace/categories */
  async categories(): Promise<Category[]> {
    return (await this.call<{ categories: Category[] }>('/api/marketplace/categories', {})).categories;
  }

  /** GET /api/marketplace/apps/{id} */
  marketApp(id: string): Promise<MarketAppDetail> {
    return this.call(`/api/marketplace/apps/${encodeURIComponent(id)}`, {});
  }

  /** POST /api/marketplace/apps/{id}/ratings */
  rate(id: string, stars: number): Promise<Rating> {
    return this.call(`/api/marketplace/apps/${encodeURIComponent(id)}/ratings`, {
      method: 'POST',
      auth: true,
      json: { stars },
    });
  }

  /** Calls the API; returns the parsed JSON body or throws an {@link ApiError}. */
  private async call<T>(
    path: string,
    opts: { method?: string; json?: unknown; auth?: boolean },
  ): Promise<T> {
    const headers = new Headers({ Accept: 'application/json' });
    if (opts.auth) headers.set('Authorization', `Bearer ${await this.accessToken()}`);
    let body: string | undefined;
    if (opts.json !== undefined) {
      headers.set('Content-Type', 'application/json');
      body = JSON.stringify(opts.json);
    }
    let res: Response;
    try {
      res = await this.fetchFn(path, { method: opts.method ?? 'GET', headers, body });
    } catch (err) {
      throw new ApiError(0, `could not reach the server: ${errorMessage(err)}`);
    }
    const text = await res.text();
    let parsed: unknown = null;
    let isJson = true;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      isJson = false; // fall through with the status only
    }
    if (res.ok && (!isJson || (parsed === null && res.status !== 204))) {
      // The relay serves the web app for every path it has no route for, so an API this
      // relay lacks answers 200 with a web page: report it as the 404 it is.
      throw new ApiError(404, `this relay has no ${path.split('?')[0]} API`);
    }
    if (!res.ok) {
      const message =
        parsed && typeof parsed === 'object' && 'error' in parsed && typeof parsed.error === 'string'
          ? parsed.error
          : `request failed with HTTP ${res.status}`;
      const reason =
        parsed && typeof parsed === 'object' && 'code' in parsed && typeof parsed.code === 'string'
          ? {
              code: parsed.code,
              providers:
                'providers' in parsed && Array.isArray(parsed.providers)
                  ? (parsed.providers as unknown[]).filter((p): p is string => typeof p === 'string')
                  : [],
            }
          : undefined;
      throw new ApiError(res.status, message, reason);
    }
    return parsed as T;
  }
}
