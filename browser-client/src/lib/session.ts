/**
 * The page's relay session: one {@link RelayClient} at a time, reopened with jittered
 * exponential backoff whenever it closes or cannot be opened, and a live device-status
 * subscription that is re-opened on every new session (and when the relay finishes it,
 * or the access token is refreshed).
 */

import { RelayClient, TransportError, errorMessage, type ConnectOptions } from '../tunnel/client';
import { connectRelay } from '../tunnel/transport';

/** Where the session stands, for the page to show. */
export type SessionState =
  | { kind: 'idle' }
  | { kind: 'connecting' }
  | { kind: 'connected' }
  | { kind: 'retrying'; reason: string; inMs: number }
  | { kind: 'stopped' };

/** What {@link RelaySession} needs from the rest of the page (replaceable in tests). */
export interface SessionDeps {
  /** Where to connect: GET /api/session. */
  sessionInfo: () => Promise<{ webtransport_url: string; cert_sha256: string[] }>;
  /** A current access token. */
  token: () => Promise<string>;
  /** Opens a session; `RelayClient.connect` by default. */
  connect?: (url: string, certSha256Hex: string[], options: ConnectOptions) => Promise<RelayClient>;
  /** Called for every DEVICE_STATUS pushed by the relay. */
  onDeviceStatus: (deviceId: string, online: boolean, nodeVersion: string) => void;
  /**
   * Called when a watch's snapshot is complete (STATUS_SNAPSHOT_END), with how many
   * devices it held (`0`: the user has none); again after every re-opened watch.
   */
  onSnapshotEnd?: (devices: number) => void;
  /** Called whenever the state changes. */
  onState?: (state: SessionState) => void;
  /** Milliseconds before retry number `failures` (0-based); {@link backoff} by default. */
  backoff?: (failures: number) => number;
}

/** Milliseconds to wait before retry number `failures` (0-based): 1 s doubling to 30 s, ±20 %. */
export function backoff(failures: number, random: () => number = Math.random): number {
  const base = Math.min(30_000, 1_000 * 2 ** Math.min(failures, 5));
  return Math.round(base * (0.8 + random() * 0.4));
}

/** A relay session that keeps itself open while started. */
export class RelaySession {
  private state: SessionState = { kind: 'idle' };
  private current: RelayClient | null = null;
  private connecting: Promise<RelayClient> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private failures = 0;
  /** Bumped by start and stop, so that work for an earlier run changes nothing. */
  private gen = 0;
  private running = false;
  private watch: { controller: AbortController; client: RelayClient } | null = null;
  private watchTimer: ReturnType<typeof setTimeout> | undefined;
  private watchFailures = 0;
  private readonly connectFn: NonNullable<SessionDeps['connect']>;
  private readonly backoffFn: (failures: number) => number;

  constructor(private readonly deps: SessionDeps) {
    // WebTransport raced against the WebSocket fallback (src/tunnel/transport).
    this.connectFn = deps.connect ?? ((url, hashes, options) => connectRelay(url, hashes, options));
    this.backoffFn = deps.backoff ?? ((n) => backoff(n));
  }

  /** The current state. */
  get status(): SessionState {
    return this.state;
  }

  private setState(state: SessionState): void {
    this.state = state;
    this.deps.onState?.(state);
  }

  /** Opens the session (and the device-status watch) and keeps it open until {@link stop}. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.gen++;
    void this.client().catch(() => undefined);
  }

  /** Closes the session and stops reconnecting. */
  stop(): void {
    this.running = false;
    this.gen++;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.stopWatch();
    this.connecting = null;
    this.current?.close('signed out');
    this.current = null;
    this.failures = 0;
    this.setState({ kind: 'stopped' });
  }

  /**
   * The open session, connecting now when there is none (a scheduled retry is brought
   * forward). Rejects when the connection fails.
   */
  client(): Promise<RelayClient> {
    if (this.current && !this.current.isClosed) return Promise.resolve(this.current);
    if (this.connecting) return this.connecting;
    if (!this.running) return Promise.reject(new TransportError('session_closed', 'not signed in'));
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const gen = this.gen;
    const attempt = (async () => {
      this.setState({ kind: 'connecting' });
      try {
        const info = await this.deps.sessionInfo();
        const client = await this.connectFn(info.webtransport_url, info.cert_sha256 ?? [], {});
        if (gen !== this.gen) {
          client.close('signed out');
          throw new TransportError('session_closed', 'signed out');
        }
        this.current = client;
        this.failures = 0;
        this.setState({ kind: 'connected' });
        void client.closed.then((closed) => {
          if (this.current !== client) return; // replaced or stopped
          this.current = null;
          this.stopWatch();
          const reason = closed.clean
            ? `closed${closed.reason ? `: ${closed.reason}` : ''}`
            : `connection lost: ${closed.reason}`;
          this.scheduleRetry(reason);
        });
        void this.startWatch(client);
        return client;
      } catch (err) {
        if (gen === this.gen) this.scheduleRetry(`connection failed: ${errorMessage(err)}`);
        throw err;
      }
    })();
    this.connecting = attempt;
    void attempt
      .finally(() => {
        if (this.connecting === attempt) this.connecting = null;
      })
      .catch(() => undefined);
    return attempt;
  }

  /** A new access token: reopen the watch with it (the relay checks the token when a stream opens). */
  tokenRefreshed(): void {
    if (this.watch && this.current === this.watch.client) void this.startWatch(this.watch.client);
  }

  private scheduleRetry(reason: string): void {
    if (!this.running || this.retryTimer !== undefined) return;
    const inMs = this.backoffFn(this.failures++);
    this.setState({ kind: 'retrying', reason, inMs });
    const gen = this.gen;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (gen === this.gen && this.running && !this.current) void this.client().catch(() => undefined);
    }, inMs);
  }

  private stopWatch(): void {
    clearTimeout(this.watchTimer);
    this.watchTimer = undefined;
    this.watch?.controller.abort();
    this.watch = null;
  }

  /** (Re)starts the device-status watch on `client`; it keeps itself going while `client` is current. */
  private async startWatch(client: RelayClient): Promise<void> {
    this.stopWatch();
    const controller = new AbortController();
    this.watch = { controller, client };
    const live = (): boolean => this.watch?.controller === controller && this.current === client && !client.isClosed;
    try {
      const token = await this.deps.token();
      if (!live()) return;
      await client.watchDevices({
        token,
        signal: controller.signal,
        onStatus: (deviceId, online, nodeVersion) => {
          if (!live()) return;
          this.watchFailures = 0;
          this.deps.onDeviceStatus(deviceId, online, nodeVersion);
        },
        onSnapshotEnd: (devices) => {
          if (!live()) return;
          this.watchFailures = 0;
          this.deps.onSnapshotEnd?.(devices);
        },
      });
      // The relay finished the stream (e.g. this page read too slowly): a new one starts
      // with a fresh snapshot.
    } catch (err) {
      if (!live()) return;
      console.warn(`device status stream failed: ${errorMessage(err)}`);
      // A lost session is reopened by the close handler, which restarts the watch.
      if (err instanceof TransportError && err.code === 'session_closed') return;
    }
    if (!live()) return;
    this.watch = null;
    const delay = this.backoffFn(this.watchFailures++);
    this.watchTimer = setTimeout(() => {
      this.watchTimer = undefined;
      if (this.current === client && !client.isClosed && this.running) void this.startWatch(client);
    }, delay);
  }
}
