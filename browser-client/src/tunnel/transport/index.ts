/**
 * Which transport carries the page's relay session, chosen the way happy eyeballs
 * chooses an address family: WebTransport (QUIC) first; a WebSocket to the same origin
 * (`/tunnel/browser`, tunnel's mux, {@link MuxSession}) after a short head start
 * ({@link HEAD_START_MS}), or at once when the browser has no WebTransport or it fails
 * first. The first that is ready carries the session; the other is closed.
 *
 * What worked is remembered per relay origin for {@link REMEMBER_MS} (localStorage):
 * where the WebSocket won, the next session starts on it without waiting. While on the
 * WebSocket, WebTransport is retried in the background every {@link RETRY_MS}; once it
 * is reachable, new streams go to it, running streams finish on the WebSocket, which is
 * then closed.
 *
 * {@link currentTransport} tells the page which transport it is on (the indicator in
 * the header).
 */

import { RelayClient, type ConnectOptions, type TransportLike } from '../client';
import { MuxSession, type MuxOptions } from './mux';

export { MuxSession } from './mux';

/** Which transport a session runs on. */
export type TransportKind = 'webtransport' | 'websocket';

/**
 * How long WebTransport gets before the WebSocket is started too. A QUIC handshake plus
 * the HTTP/3 CONNECT takes one to two round trips (under 100 ms on most networks, a few
 * ms on loopback), so 250 ms (RFC 8305's connection attempt delay) lets QUIC win
 * wherever it works, while a network that drops UDP costs only 250 ms more than TCP.
 */
export const HEAD_START_MS = 250;
/** How long a relay origin's winning transport is remembered. */
export const REMEMBER_MS = 60 * 60 * 1000;
/** How often WebTransport is retried in the background while on the WebSocket. */
export const RETRY_MS = 30_000;
/** How long a replaced WebSocket may keep running streams before it is closed. */
export const DRAIN_MS = 10 * 60 * 1000;

const STORAGE_PREFIX = 'aisa.transport:';

/** The page's current transport, for the indicator. Emits `change`. */
class TransportState extends EventTarget {
  kind: TransportKind | null = null;
  set(kind: TransportKind | null): void {
    if (this.kind === kind) return;
    this.kind = kind;
    this.dispatchEvent(new Event('change'));
  }
}

/** Which transport the page's session is on now (`null`: none open). */
export const currentTransport = new TransportState();

/** What the racing needs (replaceable in tests). */
export interface RaceDeps {
  /** Opens WebTransport; rejects when it cannot. `null` when the browser has none. */
  webTransport: ((url: string, hashes: string[]) => Promise<TransportLike>) | null;
  /** Opens the WebSocket session. */
  webSocket: (url: string) => Promise<TransportLike & { streamCount?: number }>;
  /** localStorage, or `null`. */
  storage: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null;
  now: () => number;
  headStartMs: number;
  retryMs: number;
}

function defaultDeps(): RaceDeps {
  return {
    webTransport:
      typeof WebTransport === 'undefined'
        ? null
        : async (url, hashes) => {
            const init: WebTransportOptions | undefined = hashes.length
              ? {
                  serverCertificateHashes: hashes.map((hex) => ({
                    algorithm: 'sha-256',
                    value: new Uint8Array((hex.match(/../g) ?? []).map((b) => parseInt(b, 16))),
                  })),
                }
              : undefined;
            const t = new WebTransport(url, init);
            await t.ready;
            return t;
          },
    webSocket: async (url) => {
      const s = new MuxSession(new WebSocket(url) as unknown as ConstructorParameters<typeof MuxSession>[0], {} as MuxOptions);
      await s.ready;
      return s as unknown as TransportLike & { streamCount: number };
    },
    storage: typeof localStorage === 'undefined' ? null : localStorage,
    now: () => Date.now(),
    headStartMs: HEAD_START_MS,
    retryMs: RETRY_MS,
  };
}

/** The WebSocket URL on the page's own origin. */
export function webSocketUrl(origin: { protocol: string; host: string } = location): string {
  return `${origin.protocol === 'https:' ? 'wss' : 'ws'}://${origin.host}/tunnel/browser`;
}

/** What is remembered for `key`, if not expired. */
export function remembered(deps: Pick<RaceDeps, 'storage' | 'now'>, key: string): TransportKind | null {
  try {
    const raw = deps.storage?.getItem(STORAGE_PREFIX + key);
    if (!raw) return null;
    const { kind, until } = JSON.parse(raw) as { kind: TransportKind; until: number };
    if (until > deps.now()) return kind;
    deps.storage?.removeItem(STORAGE_PREFIX + key);
  } catch {
    /* unreadable: as if nothing */
  }
  return null;
}

function remember(deps: Pick<RaceDeps, 'storage' | 'now'>, key: string, kind: TransportKind): void {
  try {
    if (kind === 'webtransport') deps.storage?.removeItem(STORAGE_PREFIX + key);
    else deps.storage?.setItem(STORAGE_PREFIX + key, JSON.stringify({ kind, until: deps.now() + REMEMBER_MS }));
  } catch {
    /* storage full or denied: not remembered */
  }
}

/** Races the two transports; resolves with the winner (the loser is closed). */
export async function race(
  wtUrl: string,
  hashes: string[],
  wsUrl: string,
  deps: RaceDeps,
): Promise<{ kind: TransportKind; transport: TransportLike }> {
  const key = new URL(wtUrl).host;
  const preferWs = remembered(deps, key) === 'websocket';
  const wt = deps.webTransport;
  type Winner = { kind: TransportKind; transport: TransportLike };
  return new Promise<Winner>((resolve, reject) => {
    let settled = false;
    let pending = 0;
    let wsStarted = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const errors: string[] = [];
    const attempt = (kind: TransportKind, open: () => Promise<TransportLike>) => {
      pending++;
      open().then(
        (transport) => {
          pending--;
          if (settled) {
            transport.close({ closeCode: 0, reason: 'another transport won' });
            return;
          }
          settled = true;
          clearTimeout(timer);
          remember(deps, key, kind);
          resolve({ kind, transport });
        },
        (err: unknown) => {
          pending--;
          errors.push(`${kind}: ${err instanceof Error ? err.message : String(err)}`);
          // WebTransport failed before its head start ran out: no reason to wait.
          if (kind === 'webtransport') startWs();
          if (pending === 0 && wsStarted && !settled) {
            settled = true;
            reject(new Error(`could not reach the relay (${errors.join('; ')})`));
          }
        },
      );
    };
    const startWs = () => {
      if (wsStarted) return;
      wsStarted = true;
      clearTimeout(timer);
      attempt('websocket', () => deps.webSocket(wsUrl));
    };
    if (wt && !preferWs) {
      attempt('webtransport', () => wt(wtUrl, hashes));
      timer = setTimeout(startWs, deps.headStartMs);
    } else {
      // No WebTransport here, or the WebSocket worked on this network recently (then
      // the session retries WebTransport in the background).
      startWs();
    }
  });
}

/**
 * A session's transport that can move: starts on the race's winner and, while on the
 * WebSocket, moves new streams to WebTransport once it is reachable.
 */
export class MovingTransport implements TransportLike {
  readonly ready: Promise<undefined> = Promise.resolve(undefined);
  readonly closed: Promise<WebTransportCloseInfo>;
  private settle!: { resolve: (info: WebTransportCloseInfo) => void; reject: (err: unknown) => void };
  private retry: ReturnType<typeof setInterval> | undefined;
  private stopped = false;

  constructor(
    private kindNow: TransportKind,
    private current: TransportLike,
    private readonly wtUrl: string,
    private readonly hashes: string[],
    private readonly deps: RaceDeps,
  ) {
    this.closed = new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.follow(current);
    currentTransport.set(kindNow);
    if (kindNow === 'websocket' && deps.webTransport) {
      this.retry = setInterval(() => void this.tryWebTransport(), deps.retryMs);
    }
  }

  /** The transport new streams go to. */
  get kind(): TransportKind {
    return this.kindNow;
  }

  private follow(t: TransportLike): void {
    t.closed.then(
      (info) => {
        if (t === this.current) this.end(() => this.settle.resolve(info));
      },
      (err: unknown) => {
        if (t === this.current) this.end(() => this.settle.reject(err));
      },
    );
  }

  private end(settle: () => void): void {
    this.stopped = true;
    clearInterval(this.retry);
    currentTransport.set(null);
    settle();
  }

  /** One background attempt to move to WebTransport. */
  async tryWebTransport(): Promise<boolean> {
    if (this.stopped || this.kindNow !== 'websocket' || !this.deps.webTransport) return false;
    let wt: TransportLike;
    try {
      wt = await this.deps.webTransport(this.wtUrl, this.hashes);
    } catch {
      return false;
    }
    if (this.stopped) {
      wt.close({ closeCode: 0, reason: 'session over' });
      return false;
    }
    const old = this.current as TransportLike & { streamCount?: number };
    this.current = wt;
    this.kindNow = 'webtransport';
    clearInterval(this.retry);
    this.follow(wt);
    remember(this.deps, new URL(this.wtUrl).host, 'webtransport');
    currentTransport.set('webtransport');
    // Running streams finish on the WebSocket; then it goes.
    const started = this.deps.now();
    const drain = setInterval(() => {
      if ((old.streamCount ?? 0) === 0 || this.deps.now() - started > DRAIN_MS) {
        clearInterval(drain);
        old.close({ closeCode: 0, reason: 'moved to WebTransport' });
      }
    }, 1000);
    return true;
  }

  close(info?: WebTransportCloseInfo): void {
    clearInterval(this.retry);
    this.current.close(info);
  }

  createBidirectionalStream(options?: WebTransportSendStreamOptions): Promise<WebTransportBidirectionalStream> {
    return this.current.createBidirectionalStream(options);
  }
}

/**
 * Opens the page's relay session on whichever transport works (see the module doc):
 * the drop-in for `RelayClient.connect`.
 */
export async function connectRelay(
  wtUrl: string,
  hashes: string[],
  options: ConnectOptions = {},
  deps: RaceDeps = defaultDeps(),
  wsUrl: string = webSocketUrl(),
): Promise<RelayClient> {
  const { kind, transport } = await race(wtUrl, hashes, wsUrl, deps);
  return RelayClient.fromTransport(new MovingTransport(kind, transport, wtUrl, hashes, deps), options);
}
