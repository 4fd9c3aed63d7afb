/**
 * The relay's HTTP API: accounts (sign-up, sign-in with short-lived access tokens and
 * single-use refresh tokens, sign-out), devices, the plan and usage, the WebTransport
 * session's address, and the marketplace (docs/relay.md). Tokens live in memory
 * only.
 */

import { errorMessage } from '../tunnel/client';

/** POST /api/auth/login (and /refresh) → 200, POST /api/auth/signup → 201. */
export interface LoginResponse {
  token: string;
  refresh_token: string;
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
  last_seen: string | null;
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
export type ApiEvent = 'signed-in' | 'signed-out' | 'token-refreshed';

/**
 * The HTTP API with the signed-in user's tokens. The access token is refreshed a minute
 * before it expires, by one refresh shared among all callers; a refresh that fails with
 * 401 signs the user out.
 */
export class Api {
  private auth: { token: string; refreshToken: string; expiresAt: number; user: SignedIn } | null = null;
  private refreshing: Promise<void> | null = null;
  /** Counts sign-ins and sign-outs, so that a refresh finishing after a sign-out changes nothing. */
  private epoch = 0;
  private readonly listeners = new Set<(e: ApiEvent) => void>();

  constructor(
    private readonly fetchFn: typeof fetch = (...args) => fetch(...args),
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** The signed-in user, or null. */
  get user(): SignedIn | null {
    return this.auth?.user ?? null;
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
      refreshToken: res.refresh_token,
      // Refresh a minute early, so that a token never expires mid-request.
      expiresAt: this.now() + Math.max(0, res.expires_in - 60) * 1000,
      user: { userId: res.user_id, email: res.email },
    };
  }

  /** Signs in, or first creates the account (`signup`). Throws an {@link ApiError}. */
  async signIn(how: 'login' | 'signup', email: string, password: string): Promise<SignedIn> {
    const res = await this.call<LoginResponse>(how === 'signup' ? '/api/auth/signup' : '/api/auth/login', {
      method: 'POST',
      json: { email, password },
    });
    this.epoch++;
    this.remember(res);
    this.emit('signed-in');
    return { userId: res.user_id, email: res.email };
  }

  /** Forgets the tokens and revokes the refresh token (the access token simply expires). */
  signOut(): void {
    const auth = this.auth;
    this.epoch++;
    this.auth = null;
    this.refreshing = null;
    if (auth) {
      void this.call('/api/auth/logout', { method: 'POST', json: { refresh_token: auth.refreshToken } }).catch(
        () => undefined,
      );
    }
    this.emit('signed-out');
  }

  /** The access token, refreshed first when it is about to expire. */
  async accessToken(): Promise<string> {
    if (!this.auth) throw new ApiError(401, 'not signed in');
    if (this.now() >= this.auth.expiresAt) {
      const refreshToken = this.auth.refreshToken;
      const started = this.epoch;
      this.refreshing ??= (async () => {
        try {
          const res = await this.call<LoginResponse>('/api/auth/refresh', {
            method: 'POST',
            json: { refresh_token: refreshToken },
          });
          if (this.epoch !== started) return; // signed out meanwhile: stay signed out
          this.remember(res);
          this.emit('token-refreshed');
        } catch (err) {
          if (this.epoch === started && err instanceof ApiError && err.status === 401) this.signOut();
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
      throw new ApiError(res.status, message);
    }
    return parsed as T;
  }
}
