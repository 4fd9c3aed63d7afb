/**
 * The browser's side of the relay: one WebTransport session, one bidirectional stream
 * per request, and optionally one more for live device status.
 *
 * The protocol's rules for each stream live in sans-IO machines: `machine/request.ts`
 * (an action, GET_STATUS, INSTALL_APP or a pairing: header and request out, chunks then
 * one final message in, CANCEL and its grace period, FIN and truncation) and
 * `machine/status.ts` (the device-status stream: snapshot, STATUS_SNAPSHOT_END, changes).
 * The methods here are pumps over them (`pump.ts` moves the bytes and keeps the one
 * timer): they seal requests and open answers end to end, and turn the machines' events
 * into callbacks, results and errors.
 */

import type { ResponseOpener } from '../e2e/index';
import { sealAction, sealedCancel, sealPairing, type PairingLink } from '../e2e/stream';
import { encodeEnvelope, type Body, type Envelope, type OpenHeader, type StreamKind } from './codec';
import { RemoteError, TransportError, errorMessage } from './errors';
import { ClientRequest, type ClientEvent } from './machine/request';
import type { Refusal } from './machine/refusal';
import { StatusWatch, type StatusEvent } from './machine/status';
import { StreamPump } from './pump';

export { RemoteError, TransportError, errorMessage, type TransportErrorCode } from './errors';
export { CANCEL_GRACE_MS } from './machine/request';

/** The part of the WebTransport API the client uses (a real `WebTransport` fits it). */
export type TransportLike = Pick<
  WebTransport,
  'ready' | 'closed' | 'close' | 'createBidirectionalStream'
>;

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
  /**
   * The model to run it with (protocol 1.2), one of those the desktop's DEVICE_STATUS
   * offers; absent: the desktop's default.
   */
  model?: string;
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

/** An upload of a file to a desktop: {@link RelayClient.uploadFile}. */
export interface UploadRequest {
  /** The device to send it to. */
  deviceId: string;
  /** The user's access token (the JWT from sign-in). */
  token: string;
  /** The installed app whose data folder receives the file. */
  appId: string;
  /** The file (its bytes are read in pieces as they are sent). */
  file: Blob;
  /** The file's name (the desktop keeps a safe form of it). */
  name: string;
  /** Called with how many bytes the desktop has written so far. */
  onProgress?: (received: number, size: number) => void;
  /** Aborting sends CANCEL; the desktop removes what it received. */
  signal?: AbortSignal;
  /** Seal the request, the chunks and the answers end to end (a paired device). */
  e2e?: E2eKeys;
}

/** The most bytes of a file one FILE_CHUNK carries (the desktop's limit). */
export const UPLOAD_CHUNK_BYTES = 64 * 1024;

/** Options of {@link RelayClient.connect}. */
export interface ConnectOptions {
  /** Called once when the session closes or is lost. */
  onClosed?: (info: SessionClosed) => void;
}

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
   * The request machine for `body` on a new stream of `kind`, and its pump: sealed end
   * to end (the opener opens the answers) when `e2e` is given.
   */
  private async startRequest(
    target: { deviceId: string; token: string; e2e?: E2eKeys },
    kind: StreamKind,
    requestId: number,
    body: Body,
    when: string,
  ): Promise<{ pump: StreamPump<ClientEvent>; machine: ClientRequest; opener?: ResponseOpener }> {
    const { deviceId, token, e2e } = target;
    const request: Envelope = { requestId, deviceId, body };
    let machine: ClientRequest;
    let opener: ResponseOpener | undefined;
    if (e2e) {
      const sealed = await sealAction(e2e.desktopPk, e2e.browserKey, e2e.browserPk, deviceId, encodeEnvelope(request));
      opener = sealed.opener;
      machine = ClientRequest.withBody({ deviceId, kind, token, e2e: sealed.e2e }, requestId, sealed.first);
    } else {
      machine = ClientRequest.plain({ deviceId, kind, token, e2e: null }, request);
    }
    const stream = await this.openStream();
    const pump = this.pumpFor(stream, machine, when, opener);
    return { pump, machine, opener };
  }

  private pumpFor(
    stream: WebTransportBidirectionalStream,
    machine: ClientRequest,
    when: string,
    opener?: ResponseOpener,
  ): StreamPump<ClientEvent> {
    return new StreamPump(
      stream,
      machine,
      (err) => this.readFailure(err, when),
      opener ? { opener, handle: (env) => machine.handleEnvelope(env) } : undefined,
    );
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
    const execute: Body = {
      type: 'ExecuteAction',
      appId: req.appId,
      action: req.action,
      payload: req.payload,
      ...(req.model ? { model: req.model } : {}),
    };
    const { pump, machine, opener } = await this.startRequest(req, 'Action', requestId, execute, 'before the action finished');

    let aborted = false;
    const onAbort = (): void => {
      if (aborted) return;
      aborted = true;
      // On an encrypted stream the CANCEL is sealed too: the desktop ignores a plain one.
      if (!opener) {
        machine.cancel(Date.now());
        pump.flushAndFinish();
        return;
      }
      sealedCancel(opener, requestId, req.deviceId).then(
        (body) => {
          machine.cancelWithBody(Date.now(), body);
          pump.flushAndFinish();
        },
        (err: unknown) => pump.interrupt(err),
      );
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort(); // aborted while the stream was being opened

    try {
      for await (const event of pump.events()) {
        if (event.type === 'failed') {
          throw refusalError(event.refusal, endedMessage('the action finished', pump.writeError));
        }
        const b = event.envelope.body;
        if (event.type === 'message') {
          // Chunks of a cancelled action are not reported (also while a sealed CANCEL is being made).
          if (b.type === 'StreamChunk' && !aborted) req.onChunk?.(b.data, b.seq);
          continue;
        }
        if (b.type !== 'StreamEnd') {
          throw new TransportError('unexpected_message', `unexpected ${b.type} message on an action stream`);
        }
        checkSealedEnd(opener);
        pump.closeCleanly();
        return { chunks: b.chunks, elapsedMs: b.elapsedMs };
      }
      throw new TransportError('stream_ended', endedMessage('the action finished', pump.writeError));
    } catch (err) {
      if (err instanceof RemoteError) {
        pump.closeCleanly();
        throw err;
      }
      // Anything else leaves the stream in an unknown state: reset both directions.
      pump.reset(err);
      if (aborted) throw abortError(signal);
      throw err;
    } finally {
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
    const header: OpenHeader = { deviceId: req.link.deviceId, kind: 'Control', token: req.token, e2e: sealed.e2e };
    const machine = ClientRequest.withBody(header, 0, sealed.first);
    const pump = this.pumpFor(await this.openStream(), machine, 'before the pairing was confirmed', sealed.opener);
    try {
      for await (const event of pump.events()) {
        if (event.type === 'failed') {
          throw refusalError(event.refusal, endedMessage('the pairing was confirmed', pump.writeError));
        }
        const b = event.envelope.body;
        if (event.type === 'done' && b.type === 'StreamEnd' && sealed.opener.finished) return;
        throw new TransportError('unexpected_message', `unexpected ${b.type} message answering a pairing`);
      }
      throw new TransportError('stream_ended', endedMessage('the pairing was confirmed', pump.writeError));
    } finally {
      pump.closeCleanly();
    }
  }

  /**
   * Watches the user's devices come online and go offline, on a new stream.
   *
   * Calls `onStatus` for every DEVICE_STATUS (and `onSnapshotEnd` once, after the
   * snapshot) until the relay finishes the stream (the promise resolves; the relay does
   * this to a reader that falls behind, and a new watch gets a fresh snapshot) or
   * `signal` aborts (the write side is finished, which ends the subscription, and the
   * promise resolves at once; nothing more is reported). Rejects with a
   * {@link RemoteError} for an ERROR envelope (e.g. `unauthenticated`), a
   * {@link TransportError} when the stream is reset, the session closes or bad bytes or
   * another message type arrive, or with whatever `onStatus` throws.
   */
  async watchDevices(req: WatchDevicesRequest): Promise<void> {
    const { signal } = req;
    if (signal?.aborted) return;
    this.assertOpen();
    // The header is all this side ever sends; the write side stays open until the end,
    // since finishing it ends the subscription.
    const pump = new StreamPump<StatusEvent>(await this.openStream(), new StatusWatch(req.token), (err) =>
      this.readFailure(err, 'while watching devices'),
    );
    const onAbort = (): void => pump.stop();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort(); // aborted while the stream was being opened
    try {
      for await (const event of pump.events()) {
        switch (event.type) {
          case 'status':
            req.onStatus(event.deviceId, event.online, event.nodeVersion);
            break;
          case 'snapshot_end':
            req.onSnapshotEnd?.(event.devices);
            break;
          case 'failed':
            throw refusalError(event.refusal, 'stream ended while watching devices');
          case 'ended':
            break;
        }
      }
      // The relay finished its side, or we stopped: finish ours, and let whatever is
      // still in flight (up to the relay's finish) arrive in the background.
      pump.closeCleanly();
    } catch (err) {
      if (err instanceof RemoteError) pump.closeCleanly();
      else pump.reset(err);
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Sends one request (e.g. GET_STATUS or INSTALL_APP) on a new Control stream and yields
   * every envelope the desktop answers with, in order: STREAM_CHUNKs, then the final
   * STREAM_END or DEVICE_STATUS (after which the stream is finished cleanly).
   *
   * An ERROR envelope is thrown as a {@link RemoteError} (after which nothing more is
   * read); a reset, a lost session, bad bytes or the stream ending before the final
   * message as a {@link TransportError}. When `signal` aborts, or the caller stops
   * iterating early, the stream is reset in both directions (an abort then throws a
   * DOMException named `AbortError`).
   */
  async *request(req: StreamRequest): AsyncGenerator<Envelope, void, undefined> {
    const { signal } = req;
    signal?.throwIfAborted();
    this.assertOpen();
    const requestId = req.requestId ?? this.nextRequestId++;
    const { pump, opener } = await this.startRequest(req, 'Control', requestId, req.body, 'before the answer was complete');
    const onAbort = (): void => pump.interrupt(abortError(signal));
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();

    let clean = false;
    try {
      for await (const event of pump.events()) {
        if (event.type === 'failed') {
          clean = event.refusal.reason === 'remote_error';
          throw refusalError(event.refusal, endedMessage('the answer was complete', pump.writeError));
        }
        if (event.type === 'done') {
          checkSealedEnd(opener);
          clean = true;
        }
        yield event.envelope;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // Aborted, failed, or the caller stopped early: reset both directions.
      if (clean) pump.closeCleanly();
      else pump.reset();
    }
  }

  /**
   * Uploads a file into the data folder of the app `appId` on the desktop (protocol 1.2,
   * docs/protocol.md "Files"): FILE_UPLOAD on a Control stream, then the file in
   * FILE_CHUNKs of {@link UPLOAD_CHUNK_BYTES}, each sent once the stream took the one
   * before (sealed as control messages on an encrypted stream). The desktop's
   * FILE_PROGRESS messages go to `onProgress`. Resolves with the FILE_STORED's path (what
   * a form submits) and size. Rejects with a {@link RemoteError} (`limit_exceeded` over
   * the desktop's cap, `unknown_app`, …), a {@link TransportError}, or an `AbortError`
   * when `signal` aborts (a CANCEL is sent: the desktop keeps nothing).
   */
  async uploadFile(req: UploadRequest): Promise<{ path: string; size: number }> {
    const { signal } = req;
    signal?.throwIfAborted();
    this.assertOpen();
    const requestId = this.nextRequestId++;
    const size = req.file.size;
    const upload: Body = { type: 'FileUpload', appId: req.appId, name: req.name, size };
    const { pump, machine, opener } = await this.startRequest(req, 'Control', requestId, upload, 'before the upload was stored');
    // Sealed control messages carry a sequence: seal one at a time, in sending order.
    let sealing: Promise<unknown> = Promise.resolve();
    const seal = (body: Body): Promise<Uint8Array> => {
      const env = encodeEnvelope({ requestId, deviceId: req.deviceId, body });
      if (!opener) return Promise.resolve(env);
      const sealed = sealing.then(() => opener.sealControl(env));
      sealing = sealed.catch(() => undefined);
      return sealed;
    };

    let aborted = false;
    const onAbort = (): void => {
      if (aborted) return;
      aborted = true;
      seal({ type: 'Cancel' }).then(
        (body) => {
          machine.cancelWithBody(Date.now(), body);
          pump.flushAndFinish();
        },
        (err: unknown) => pump.interrupt(err),
      );
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();

    // The chunks go out while the answers are read; a desktop that refuses at once (over
    // its cap) ends the request, which stops the sending.
    const sending = (async () => {
      pump.flush(); // the header and FILE_UPLOAD
      for (let at = 0; at < size && !aborted && !machine.isDone; ) {
        const piece = new Uint8Array(await req.file.slice(at, at + UPLOAD_CHUNK_BYTES).arrayBuffer());
        if (piece.length === 0) throw new TransportError('stream_ended', 'the file became shorter while it was being sent');
        const body = await seal({ type: 'FileChunk', data: piece });
        if (aborted || machine.isDone) break;
        machine.sendFrame(body);
        await pump.flushAndWait();
        at += piece.length;
      }
    })();
    // A failed send shows as what the desktop or the relay answers (or the stream's end).
    sending.catch(() => undefined);

    try {
      for await (const event of pump.events()) {
        if (event.type === 'failed') {
          throw refusalError(event.refusal, endedMessage('the upload was stored', pump.writeError));
        }
        const b = event.envelope.body;
        if (event.type === 'message') {
          if (b.type === 'FileProgress' && !aborted) req.onProgress?.(b.received, size);
          continue;
        }
        if (b.type !== 'FileStored') {
          throw new TransportError('unexpected_message', `unexpected ${b.type} answer to FILE_UPLOAD`);
        }
        checkSealedEnd(opener);
        pump.closeCleanly();
        req.onProgress?.(b.size, size);
        return { path: b.path, size: b.size };
      }
      throw new TransportError('stream_ended', endedMessage('the upload was stored', pump.writeError));
    } catch (err) {
      if (err instanceof RemoteError) {
        pump.closeCleanly();
        if (aborted && err.code === 'cancelled') throw abortError(signal);
        throw err;
      }
      pump.reset(err);
      if (aborted) throw abortError(signal);
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Turns a failed `read()` into a TransportError saying whether the stream or session died. */
  private readFailure(err: unknown, when: string): TransportError {
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

/** The error a machine's refusal is reported as; `ended` is the message for a stream that ended early. */
function refusalError(refusal: Refusal, ended: string): Error {
  switch (refusal.reason) {
    case 'remote_error':
      return new RemoteError(refusal.code, refusal.remoteMessage ?? refusal.message);
    case 'ended_early':
      return new TransportError('stream_ended', ended);
    case 'malformed_frame':
    case 'malformed_message':
      return new TransportError('malformed_frame', refusal.message);
    case 'unexpected_message':
      return new TransportError('unexpected_message', refusal.message);
    case 'cancel_unanswered':
      return new DOMException(refusal.message, 'AbortError');
  }
}

/** "stream ended before …", with why sending failed when it did. */
function endedMessage(what: string, writeError: unknown): string {
  return `stream ended before ${what}` + (writeError ? ` (sending failed: ${errorMessage(writeError)})` : '');
}

/** On an encrypted stream the final message must be in the final sealed chunk. */
function checkSealedEnd(opener: ResponseOpener | undefined): void {
  if (opener && !opener.finished) {
    throw new TransportError('e2e_failed', 'the encrypted answer ended without its final chunk');
  }
}

/** An AbortError carrying the signal's reason when it is one. */
function abortError(signal: AbortSignal | undefined): unknown {
  const reason: unknown = signal?.reason;
  if (reason instanceof DOMException && reason.name === 'AbortError') return reason;
  return new DOMException('the action was cancelled', 'AbortError');
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
