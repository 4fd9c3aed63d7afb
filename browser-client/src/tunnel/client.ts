/**
 * The browser's side of the relay: one WebTransport session, one bidirectional stream
 * per action, and optionally one more for live device status.
 *
 * An action stream carries, browser → relay, a frame holding an {@link OpenHeader} and a
 * frame holding an EXECUTE_ACTION envelope (then, if the user cancels, a CANCEL
 * envelope); relay → browser, STREAM_CHUNK… then STREAM_END, or one ERROR.
 *
 * A device-status stream carries, browser → relay, only an {@link OpenHeader} of kind
 * `Control` with an empty device id; relay → browser, one DEVICE_STATUS per device of the
 * user, one STATUS_SNAPSHOT_END (protocol 1.1; also to a user with no devices), then one
 * DEVICE_STATUS more whenever a device comes online or goes offline (or one ERROR).
 */

import {
  FrameReader,
  decodeEnvelope,
  encodeEnvelope,
  encodeFrame,
  encodeOpenHeader,
  type Body,
  type Envelope,
} from './codec';

import type { ResponseOpener } from '../e2e/index';
import { openAnswer, sealAction, sealedCancel, sealPairing, type PairingLink } from '../e2e/stream';

/** The part of the WebTransport API the client uses (a real `WebTransport` fits it). */
export type TransportLike = Pick<
  WebTransport,
  'ready' | 'closed' | 'close' | 'createBidirectionalStream'
>;

/** An ERROR envelope from the relay or the desktop. */
export class RemoteError extends Error {
  /** The wire code, e.g. `device_offline`, `cancelled`, `app_failed`. */
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = 'RemoteError';
    this.code = code;
  }
}

/** Why a stream or session failed on this side (no ERROR envelope was received). */
export type TransportErrorCode =
  | 'stream_ended'
  | 'stream_reset'
  | 'session_closed'
  | 'malformed_frame'
  | 'unexpected_message'
  | 'connection_failed'
  | 'e2e_failed';

/** A failure of the transport itself rather than an answer from a peer. */
export class TransportError extends Error {
  /** What went wrong, in the same style as the wire's error codes. */
  readonly code: TransportErrorCode;

  constructor(code: TransportErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TransportError';
    this.code = code;
  }
}

/** How a session ended, as reported by {@link RelayClient.closed} and the `closed` event. */
export interface SessionClosed {
  /** True for a close with a code and reason, false when the session was lost. */
  clean: boolean;
  /** The application close code, when clean. */
  closeCode?: number;
  /** The close reason, or the error message when the session was lost. */
  reason: string;
}

/** One action to run on a desktop. */
export interface ActionRequest {
  /** The device to run it on. */
  deviceId: string;
  /** The user's access token (the JWT from sign-in). */
  token: string;
  /** The installed mini-app, e.g. `hello-ai`. */
  appId: string;
  /** The action's name, e.g. `write`. */
  action: string;
  /** The action's input, a JSON document. */
  payload: string;
  /** The envelope's request id; the client picks one when absent. */
  requestId?: number;
  /** Aborting sends CANCEL and closes the write side. */
  signal?: AbortSignal;
  /** Called for every STREAM_CHUNK, in order. */
  onChunk?: (data: string, seq: number) => void;
  /**
   * Encrypt end to end (docs/e2e.md): the desktop's identity key (from pairing) and this
   * browser's paired key pair. The request, a CANCEL and every answer are sealed; the
   * relay sees none of them, and a plain frame it injects after the first sealed one
   * fails the action (`e2e_failed`).
   */
  e2e?: E2eKeys;
}

/** The keys of an end-to-end encrypted action. */
export interface E2eKeys {
  /** The desktop's X25519 identity public key (32 bytes), from the pairing link. */
  desktopPk: Uint8Array;
  /** This browser's static key pair, registered with the desktop at pairing. */
  browserKey: CryptoKeyPair;
  /** Its public half, raw (32 bytes). */
  browserPk: Uint8Array;
}

/** A finished action, from its STREAM_END. */
export interface ActionResult {
  /** How many chunks the desktop sent. */
  chunks: number;
  /** How long the action ran on the desktop, in milliseconds. */
  elapsedMs: number;
}

/** A live device-status subscription, see {@link RelayClient.watchDevices}. */
export interface WatchDevicesRequest {
  /** The user's access token (the JWT from sign-in). */
  token: string;
  /**
   * Called for every DEVICE_STATUS, in order: first one per device of the user (the
   * snapshot), then one whenever a device comes online or goes offline.
   */
  onStatus: (deviceId: string, online: boolean, nodeVersion: string) => void;
  /**
   * Called once when the snapshot is complete (STATUS_SNAPSHOT_END), with the number of
   * devices it held: `0` means the user has no devices (rather than a slow relay). Every
   * later `onStatus` is a change. A relay older than protocol 1.1 never calls it.
   */
  onSnapshotEnd?: (devices: number) => void;
  /** Aborting finishes the write side (ending the subscription) and resolves. */
  signal?: AbortSignal;
}

/** One request on its own stream, see {@link RelayClient.request}. */
export interface StreamRequest {
  /** The device to send it to. */
  deviceId: string;
  /** The user's access token (the JWT from sign-in). */
  token: string;
  /** The request, e.g. `{ type: 'GetStatus' }` or an INSTALL_APP. */
  body: Body;
  /** The envelope's request id; the client picks one when absent. */
  requestId?: number;
  /** Aborting resets the stream. */
  signal?: AbortSignal;
  /** Seal the request and open the answers end to end, as for actions (a device with
   * `[e2e] required` refuses plain requests, status and installs included). */
  e2e?: E2eKeys;
}

/** Options of {@link RelayClient.connect}. */
export interface ConnectOptions {
  /** Called once when the session closes or is lost. */
  onClosed?: (info: SessionClosed) => void;
}

/**
 * How long to wait, after CANCEL, for the desktop to answer before the stream is reset and
 * the action rejects with an AbortError.
 */
export const CANCEL_GRACE_MS = 5_000;

/** A WebTransport session to the relay. Emits a `closed` CustomEvent<SessionClosed>. */
export class RelayClient extends EventTarget {
  /** Settles (never rejects) when the session closes or is lost. */
  readonly closed: Promise<SessionClosed>;
  private closedInfo: SessionClosed | null = null;
  private nextRequestId = 1;

  private constructor(
    private readonly transport: TransportLike,
    options: ConnectOptions = {},
  ) {
    super();
    this.closed = transport.closed.then(
      (info): SessionClosed => ({ clean: true, closeCode: info.closeCode, reason: info.reason ?? '' }),
      (err: unknown): SessionClosed => ({ clean: false, reason: errorMessage(err) }),
    );
    void this.closed.then((info) => {
      this.closedInfo = info;
      options.onClosed?.(info);
      this.dispatchEvent(new CustomEvent<SessionClosed>('closed', { detail: info }));
    });
  }

  /**
   * Opens a WebTransport session to `url` and waits until it is ready.
   *
   * `certSha256Hex` lists SHA-256 hashes (hex) of the server's DER certificate for
   * self-signed development certificates; an empty list uses the normal Web PKI.
   */
  static async connect(
    url: string,
    certSha256Hex: string[],
    options: ConnectOptions = {},
  ): Promise<RelayClient> {
    if (typeof WebTransport === 'undefined') {
      throw new TransportError('connection_failed', 'this browser does not support WebTransport');
    }
    const init: WebTransportOptions | undefined = certSha256Hex.length
      ? {
          serverCertificateHashes: certSha256Hex.map((hex) => ({
            algorithm: 'sha-256',
            value: hashFromHex(hex),
          })),
        }
      : undefined;
    let transport: WebTransport;
    try {
      transport = new WebTransport(url, init);
      await transport.ready;
    } catch (err) {
      throw new TransportError(
        'connection_failed',
        `could not connect to the relay at ${url}: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    return new RelayClient(transport, options);
  }

  /** Wraps an already-open transport (a real WebTransport, or a test double). */
  static fromTransport(transport: TransportLike, options: ConnectOptions = {}): RelayClient {
    return new RelayClient(transport, options);
  }

  /** True once the session has closed or been lost. */
  get isClosed(): boolean {
    return this.closedInfo !== null;
  }

  /** Closes the session. */
  close(reason = 'closed by the user'): void {
    try {
      this.transport.close({ closeCode: 0, reason });
    } catch {
      // Already closed.
    }
  }

  /** Throws `session_closed` when the relay session has ended. */
  private assertOpen(): void {
    if (this.closedInfo) {
      throw new TransportError('session_closed', `the relay session is closed: ${this.closedInfo.reason}`);
    }
  }

  /** A new bidirectional stream on the session; failing to open one is `session_closed`. */
  private async openStream(): Promise<WebTransportBidirectionalStream> {
    try {
      return await this.transport.createBidirectionalStream();
    } catch (err) {
      throw new TransportError('session_closed', `could not open a stream on the relay session: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }

  /**
   * Runs one action on a new stream.
   *
   * Resolves with the STREAM_END. Rejects with a {@link RemoteError} for an ERROR envelope
   * (code `cancelled` when the desktop confirms a cancel), a {@link TransportError} when
   * the stream ends, is reset or carries bad bytes first, or a DOMException named
   * `AbortError` when `signal` aborts and no answer comes within {@link CANCEL_GRACE_MS}.
   * A STREAM_END that wins the race against a cancel still resolves.
   */
  async runAction(req: ActionRequest): Promise<ActionResult> {
    const { signal } = req;
    signal?.throwIfAborted();
    this.assertOpen();
    const requestId = req.requestId ?? this.nextRequestId++;
    const envelopeFrame = (body: Body): Uint8Array =>
      encodeFrame(encodeEnvelope({ requestId, deviceId: req.deviceId, body }));

    const stream = await this.openStream();
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();

    // Writes never fail the action by themselves: the relay may refuse the stream with
    // an ERROR and stop reading, and that ERROR is the better report.
    let writeError: unknown = null;
    const write = (bytes: Uint8Array): Promise<void> =>
      writer.write(bytes).catch((err: unknown) => {
        writeError ??= err;
      });

    const executeBody: Body = {
      type: 'ExecuteAction',
      appId: req.appId,
      action: req.action,
      payload: req.payload,
    };
    let opener: ResponseOpener | undefined;
    let e2eHeader: Uint8Array | null = null;
    let execute = envelopeFrame(executeBody);
    if (req.e2e) {
      const sealed = await sealAction(
        req.e2e.desktopPk,
        req.e2e.browserKey,
        req.e2e.browserPk,
        req.deviceId,
        encodeEnvelope({ requestId, deviceId: req.deviceId, body: executeBody }),
      );
      opener = sealed.opener;
      e2eHeader = sealed.e2e;
      execute = encodeFrame(sealed.first);
    }
    const open = encodeFrame(
      encodeOpenHeader({ deviceId: req.deviceId, kind: 'Action', token: req.token, e2e: e2eHeader }),
    );
    void write(concat(open, execute));

    let aborted = false;
    let graceTimer: ReturnType<typeof setTimeout> | undefined;
    let abortReject: ((err: unknown) => void) | undefined;
    const graceExpired = new Promise<never>((_, reject) => {
      abortReject = reject;
    });
    const onAbort = (): void => {
      if (aborted) return;
      aborted = true;
      // On an encrypted stream the CANCEL is sealed too: the desktop ignores a plain one.
      const cancel = opener
        ? sealedCancel(opener, requestId, req.deviceId).then((body) => write(encodeFrame(body)))
        : write(envelopeFrame({ type: 'Cancel' }));
      void cancel.catch(() => {}).then(() => writer.close().catch(() => {}));
      graceTimer = setTimeout(() => abortReject?.(abortError(signal)), CANCEL_GRACE_MS);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort(); // aborted while the stream was being opened
    // Keep an unobserved rejection from being reported when the grace period never ends.
    graceExpired.catch(() => {});

    try {
      const result = await Promise.race([
        this.readAnswer(reader, req, () => aborted, () => writeError, opener),
        graceExpired,
      ]);
      // Clean end: finish our side and let the peer's finish arrive in the background.
      void writer.close().catch(() => {});
      void drain(reader);
      return result;
    } catch (err) {
      if (err instanceof RemoteError) {
        void writer.close().catch(() => {});
        void drain(reader);
        throw err;
      }
      // Anything else leaves the stream in an unknown state: reset both directions.
      void writer.abort(err).catch(() => {});
      void reader.cancel(err).catch(() => {});
      if (aborted) throw abortError(signal);
      throw err;
    } finally {
      clearTimeout(graceTimer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Pairs this browser with the desktop of a `desktop-node pair` link (docs/e2e.md,
   * "Pairing"): registers `keys.browserPk` with the desktop, proven by the link's
   * one-time secret, sealed to the desktop key from the link. Resolves once the desktop
   * confirmed (sealed); rejects with a {@link RemoteError} (`denied`: the link expired or
   * was used) or a {@link TransportError}.
   */
  async pair(req: {
    link: PairingLink;
    token: string;
    browserKey: CryptoKeyPair;
    browserPk: Uint8Array;
    name: string;
  }): Promise<void> {
    this.assertOpen();
    const sealed = await sealPairing(req.link, req.browserKey, req.browserPk, req.name);
    const stream = await this.openStream();
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    const open = encodeFrame(
      encodeOpenHeader({ deviceId: req.link.deviceId, kind: 'Control', token: req.token, e2e: sealed.e2e }),
    );
    void writer.write(concat(open, encodeFrame(sealed.first))).catch(() => {});
    const frames = new FrameReader();
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          throw this.readFailure(err, 'before the pairing was confirmed');
        }
        if (chunk.done) {
          finishFrames(frames);
          throw new TransportError('stream_ended', 'stream ended before the pairing was confirmed');
        }
        for (const env of await openedIn(frames, chunk.value, sealed.opener)) {
          if (env.body.type === 'Error') throw new RemoteError(env.body.code, env.body.message);
          if (env.body.type === 'StreamEnd' && sealed.opener.finished) return;
          throw new TransportError('unexpected_message', `unexpected ${env.body.type} message answering a pairing`);
        }
      }
    } finally {
      void writer.close().catch(() => {});
      void drain(reader);
    }
  }

  /**
   * Watches the user's devices come online and go offline, on a new stream.
   *
   * Calls `onStatus` for every DEVICE_STATUS (and `onSnapshotEnd` once, after the
   * snapshot) until the relay finishes the stream (the
   * promise resolves; the relay does this to a reader that falls behind, and a new watch
   * gets a fresh snapshot) or `signal` aborts (the write side is finished, which ends the
   * subscription, and the promise resolves at once; nothing more is reported). Rejects
   * with a {@link RemoteError} for an ERROR envelope (e.g. `unauthenticated`), a
   * {@link TransportError} when the stream is reset, the session closes or bad bytes or
   * another message type arrive, or with whatever `onStatus` throws.
   */
  async watchDevices(req: WatchDevicesRequest): Promise<void> {
    const { signal } = req;
    if (signal?.aborted) return;
    this.assertOpen();
    const stream = await this.openStream();
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();

    // The header is all this side ever sends; the write side stays open until the end,
    // since finishing it ends the subscription. A failed write is reported by what the
    // relay answers (or by the stream's end), as for actions.
    const header = encodeFrame(
      encodeOpenHeader({ deviceId: '', kind: 'Control', token: req.token, e2e: null }),
    );
    void writer.write(header).catch(() => {});

    let stop: (() => void) | undefined;
    const stopped = new Promise<null>((resolve) => {
      stop = () => resolve(null);
    });
    const onAbort = (): void => stop?.();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort(); // aborted while the stream was being opened

    try {
      await this.readStatuses(reader, req, stopped);
      // The relay finished its side, or we stopped: finish ours, and let whatever is
      // still in flight (up to the relay's finish) arrive in the background.
      void writer.close().catch(() => {});
      void drain(reader);
    } catch (err) {
      if (err instanceof RemoteError) {
        void writer.close().catch(() => {});
        void drain(reader);
        throw err;
      }
      void writer.abort(err).catch(() => {});
      void reader.cancel(err).catch(() => {});
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Sends one request (e.g. GET_STATUS or INSTALL_APP) on a new Action stream and yields
   * every envelope the desktop answers with, in order, until the peer finishes the stream.
   *
   * An ERROR envelope is thrown as a {@link RemoteError} (after which nothing more is
   * read); a reset, a lost session or bad bytes as a {@link TransportError}. When `signal`
   * aborts, or the caller stops iterating early, the stream is reset in both directions
   * (an abort then throws a DOMException named `AbortError`).
   */
  async *request(req: StreamRequest): AsyncGenerator<Envelope, void, undefined> {
    const { signal } = req;
    signal?.throwIfAborted();
    this.assertOpen();
    const requestId = req.requestId ?? this.nextRequestId++;
    const stream = await this.openStream();
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    let first = encodeFrame(encodeEnvelope({ requestId, deviceId: req.deviceId, body: req.body }));
    let opener: ResponseOpener | undefined;
    let e2eHeader: Uint8Array | null = null;
    if (req.e2e) {
      const sealed = await sealAction(
        req.e2e.desktopPk,
        req.e2e.browserKey,
        req.e2e.browserPk,
        req.deviceId,
        encodeEnvelope({ requestId, deviceId: req.deviceId, body: req.body }),
      );
      opener = sealed.opener;
      e2eHeader = sealed.e2e;
      first = encodeFrame(sealed.first);
    }
    const open = encodeFrame(
      encodeOpenHeader({ deviceId: req.deviceId, kind: 'Control', token: req.token, e2e: e2eHeader }),
    );
    // As for actions, a failed write is reported by what the peer answers, or the stream's end.
    void writer.write(concat(open, first)).catch(() => {});

    let abortReject: ((err: unknown) => void) | undefined;
    const abortedP = new Promise<never>((_, reject) => {
      abortReject = reject;
    });
    abortedP.catch(() => {});
    const onAbort = (): void => abortReject?.(abortError(signal));
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();

    const frames = new FrameReader();
    let clean = false;
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await Promise.race([reader.read(), abortedP]);
        } catch (err) {
          if (signal?.aborted) throw err;
          throw this.readFailure(err, 'before the answer was complete');
        }
        if (chunk.done) {
          finishFrames(frames);
          if (opener && !opener.finished) {
            throw new TransportError('e2e_failed', 'the encrypted answer ended without its final chunk');
          }
          clean = true;
          return;
        }
        const envelopes = opener ? await openedIn(frames, chunk.value, opener) : envelopesIn(frames, chunk.value);
        for (const env of envelopes) {
          if (env.body.type === 'Error') {
            clean = true;
            throw new RemoteError(env.body.code, env.body.message);
          }
          yield env;
        }
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (clean) {
        void writer.close().catch(() => {});
        void drain(reader);
      } else {
        // Aborted, failed, or the caller stopped early: reset both directions.
        void writer.abort().catch(() => {});
        void reader.cancel().catch(() => {});
      }
    }
  }

  /** Reads DEVICE_STATUS envelopes until a clean end or `stopped`; throws on anything else. */
  private async readStatuses(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    req: WatchDevicesRequest,
    stopped: Promise<null>,
  ): Promise<void> {
    const frames = new FrameReader();
    let snapshotEnded = false;
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array> | null;
      try {
        chunk = await Promise.race([reader.read(), stopped]);
      } catch (err) {
        throw this.readFailure(err, 'while watching devices');
      }
      if (chunk === null) return; // aborted
      if (chunk.done) {
        finishFrames(frames);
        return;
      }
      for (const env of envelopesIn(frames, chunk.value)) {
        const b = env.body;
        switch (b.type) {
          case 'DeviceStatus':
            // Stop reporting as soon as the caller has asked to stop.
            if (req.signal?.aborted) return;
            req.onStatus(env.deviceId, b.online, b.nodeVersion);
            break;
          case 'StatusSnapshotEnd':
            if (snapshotEnded) {
              throw new TransportError('unexpected_message', 'a second STATUS_SNAPSHOT_END on a device-status stream');
            }
            snapshotEnded = true;
            if (req.signal?.aborted) return;
            req.onSnapshotEnd?.(b.devices);
            break;
          case 'Error':
            throw new RemoteError(b.code, b.message);
          default:
            throw new TransportError(
              'unexpected_message',
              `unexpected ${b.type} message on a device-status stream`,
            );
        }
      }
    }
  }

  /** Reads frames until STREAM_END (returned) or ERROR (thrown as {@link RemoteError}). */
  private async readAnswer(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    req: ActionRequest,
    isAborted: () => boolean,
    writeError: () => unknown,
    opener?: ResponseOpener,
  ): Promise<ActionResult> {
    const frames = new FrameReader();
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        throw this.readFailure(err);
      }
      if (chunk.done) {
        finishFrames(frames);
        const cause = writeError();
        throw new TransportError(
          'stream_ended',
          'stream ended before the action finished' +
            (cause ? ` (sending failed: ${errorMessage(cause)})` : ''),
        );
      }
      const envelopes = opener ? await openedIn(frames, chunk.value, opener) : envelopesIn(frames, chunk.value);
      for (const env of envelopes) {
        const b = env.body;
        switch (b.type) {
          case 'StreamChunk':
            if (!isAborted()) req.onChunk?.(b.data, b.seq);
            break;
          case 'StreamEnd':
            if (opener && !opener.finished) {
              throw new TransportError('e2e_failed', 'the encrypted answer ended without its final chunk');
            }
            return { chunks: b.chunks, elapsedMs: b.elapsedMs };
          case 'Error':
            throw new RemoteError(b.code, b.message);
          default:
            throw new TransportError(
              'unexpected_message',
              `unexpected ${b.type} message on an action stream`,
            );
        }
      }
    }
  }

  /** Turns a failed `read()` into a TransportError saying whether the stream or session died. */
  private readFailure(err: unknown, when = 'before the action finished'): TransportError {
    const source = (err as { source?: unknown } | null)?.source;
    if (source === 'session' || this.closedInfo) {
      return new TransportError(
        'session_closed',
        `the relay session closed ${when}: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    const code = (err as { streamErrorCode?: unknown } | null)?.streamErrorCode;
    return new TransportError(
      'stream_reset',
      `stream reset ${when}` +
        (typeof code === 'number' ? ` (code ${code})` : '') +
        `: ${errorMessage(err)}`,
      { cause: err },
    );
  }
}

/** An AbortError carrying the signal's reason when it is one. */
function abortError(signal: AbortSignal | undefined): unknown {
  const reason: unknown = signal?.reason;
  if (reason instanceof DOMException && reason.name === 'AbortError') return reason;
  return new DOMException('the action was cancelled', 'AbortError');
}

/** Reads a stream to its end, ignoring what arrives and any error. */
async function drain(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
  try {
    while (!(await reader.read()).done) {
      // discard
    }
  } catch {
    // reset or session gone: nothing left to do
  } finally {
    reader.releaseLock();
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** A SHA-256 hash from hex; colons and spaces are allowed between bytes. */
export function hashFromHex(hex: string): Uint8Array<ArrayBuffer> {
  const clean = hex.replace(/[\s:]/g, '');
  if (!/^[0-9a-fA-F]{64}$/.test(clean)) {
    throw new TransportError(
      'connection_failed',
      `certificate hash must be 32 bytes of hex, got ${JSON.stringify(hex)}`,
    );
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A readable message from anything thrown. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/** Pushes received bytes and yields every whole envelope now buffered; a bad frame or
 * envelope is thrown as a `malformed_frame` {@link TransportError}. */
function* envelopesIn(frames: FrameReader, bytes: Uint8Array): Generator<Envelope> {
  frames.push(bytes);
  for (;;) {
    let env: Envelope;
    try {
      const body = frames.next();
      if (body === null) return;
      env = decodeEnvelope(body);
    } catch (err) {
      throw new TransportError('malformed_frame', errorMessage(err), { cause: err });
    }
    yield env;
  }
}

/** As {@link envelopesIn}, for an end-to-end encrypted stream: each frame is opened with
 * `opener` (a plain ERROR, the desktop's refusal before any key was agreed, passes);
 * anything that does not open is an `e2e_failed` {@link TransportError}. */
async function openedIn(frames: FrameReader, bytes: Uint8Array, opener: ResponseOpener): Promise<Envelope[]> {
  frames.push(bytes);
  const out: Envelope[] = [];
  for (;;) {
    let body: Uint8Array | null;
    try {
      body = frames.next();
    } catch (err) {
      throw new TransportError('malformed_frame', errorMessage(err), { cause: err });
    }
    if (body === null) return out;
    try {
      out.push((await openAnswer(opener, body)).envelope);
    } catch (err) {
      throw new TransportError('e2e_failed', errorMessage(err), { cause: err });
    }
  }
}

/** At the end of a stream: a frame cut short is a `malformed_frame` {@link TransportError}. */
function finishFrames(frames: FrameReader): void {
  try {
    frames.finish();
  } catch (err) {
    throw new TransportError('malformed_frame', errorMessage(err), { cause: err });
  }
}
