/**
 * The stream multiplexer over one WebSocket: the TypeScript mirror of `aisa-tunnel`'s
 * `mux` (tunnel/src/mux/), checked against tunnel/vectors/mux-vectors.json. Layout and
 * rules: docs/protocol.md, "Stream multiplexing over WebSocket and TCP".
 *
 * {@link MuxSession} gives the part of the WebTransport API the client uses (`ready`,
 * `closed`, `close`, `createBidirectionalStream`), so {@link RelayClient} runs on it
 * unchanged. Each stream's readable grants the relay more credit as the page reads
 * (once half a window is read); its writable waits for credit, so a stream nobody reads
 * holds back only itself.
 *
 * What it does not do: accept streams the relay opens (browsers only open streams),
 * prioritise streams, or reconnect (the session's owner does).
 */

/** Bytes in a frame header: type (1), stream id (4), payload length (4). */
export const HEADER_LEN = 9;
/** The most payload one DATA frame carries. */
export const MAX_DATA = 64 * 1024;
/** The longest GOAWAY reason, in bytes. */
export const MAX_REASON = 256;
/** The credit each side starts with on every stream, in each direction. */
export const INITIAL_WINDOW = 256 * 1024;

/** Frame type bytes. */
export const FrameType = {
  OPEN: 0x01,
  DATA: 0x02,
  FINISH: 0x03,
  RESET: 0x04,
  STOP: 0x05,
  CREDIT: 0x06,
  PING: 0x07,
  PONG: 0x08,
  GOAWAY: 0x09,
} as const;

/** The mux's own codes (top of the u32 space). */
export const MuxCode = {
  PROTOCOL_ERROR: 0xffffff01,
  FLOW_CONTROL_ERROR: 0xffffff02,
  IDLE_TIMEOUT: 0xffffff03,
  CONNECTION_LOST: 0xffffff04,
  REFUSED_STREAM: 0xffffff10,
} as const;

/** One mux frame. */
export type Frame =
  | { type: 'open'; id: number }
  | { type: 'data'; id: number; data: Uint8Array }
  | { type: 'finish'; id: number }
  | { type: 'reset'; id: number; code: number }
  | { type: 'stop'; id: number; code: number }
  | { type: 'credit'; id: number; increment: number }
  | { type: 'ping'; payload: Uint8Array }
  | { type: 'pong'; payload: Uint8Array }
  | { type: 'goaway'; code: number; reason: string };

/** Why bytes are not a frame; `kind` matches the vectors' `error`. */
export class MuxFrameError extends Error {
  constructor(
    readonly kind: 'truncated' | 'trailing' | 'type' | 'length' | 'stream' | 'credit' | 'reason',
    message: string,
  ) {
    super(message);
    this.name = 'MuxFrameError';
  }
}

const TYPE_BY_NAME = {
  open: FrameType.OPEN,
  data: FrameType.DATA,
  finish: FrameType.FINISH,
  reset: FrameType.RESET,
  stop: FrameType.STOP,
  credit: FrameType.CREDIT,
  ping: FrameType.PING,
  pong: FrameType.PONG,
  goaway: FrameType.GOAWAY,
} as const;

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

function cutReason(reason: string): Uint8Array {
  let bytes = encoder.encode(reason);
  if (bytes.length <= MAX_REASON) return bytes;
  let end = MAX_REASON;
  // Back off to a UTF-8 character boundary (continuation bytes are 10xxxxxx).
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  bytes = bytes.subarray(0, end);
  return bytes;
}

/** The frame's bytes. */
export function encodeFrame(frame: Frame): Uint8Array<ArrayBuffer> {
  let payload: Uint8Array;
  let id = 0;
  switch (frame.type) {
    case 'open':
    case 'finish':
      id = frame.id;
      payload = new Uint8Array(0);
      break;
    case 'data':
      id = frame.id;
      payload = frame.data;
      break;
    case 'reset':
    case 'stop':
      id = frame.id;
      payload = u32(frame.code);
      break;
    case 'credit':
      id = frame.id;
      payload = u32(frame.increment);
      break;
    case 'ping':
    case 'pong':
      payload = frame.payload;
      break;
    case 'goaway': {
      const reason = cutReason(frame.reason);
      payload = new Uint8Array(4 + reason.length);
      payload.set(u32(frame.code));
      payload.set(reason, 4);
      break;
    }
  }
  const out = new Uint8Array(HEADER_LEN + payload.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, TYPE_BY_NAME[frame.type]);
  view.setUint32(1, id);
  view.setUint32(5, payload.length);
  out.set(payload, HEADER_LEN);
  return out;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0);
  return b;
}

/** Decodes one WebSocket message, which must hold exactly one frame. */
export function decodeFrame(message: Uint8Array): Frame {
  if (message.length < HEADER_LEN) {
    throw new MuxFrameError('truncated', `truncated mux frame: ${message.length} of ${HEADER_LEN} bytes`);
  }
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const type = view.getUint8(0);
  const id = view.getUint32(1);
  const len = view.getUint32(5);
  let lenOk: boolean;
  let connectionFrame: boolean;
  switch (type) {
    case FrameType.OPEN:
    case FrameType.FINISH:
      [lenOk, connectionFrame] = [len === 0, false];
      break;
    case FrameType.DATA:
      [lenOk, connectionFrame] = [len <= MAX_DATA, false];
      break;
    case FrameType.RESET:
    case FrameType.STOP:
    case FrameType.CREDIT:
      [lenOk, connectionFrame] = [len === 4, false];
      break;
    case FrameType.PING:
    case FrameType.PONG:
      [lenOk, connectionFrame] = [len === 8, true];
      break;
    case FrameType.GOAWAY:
      [lenOk, connectionFrame] = [len >= 4 && len <= 4 + MAX_REASON, true];
      break;
    default:
      throw new MuxFrameError('type', `unknown mux frame type 0x${type.toString(16).padStart(2, '0')}`);
  }
  if (!lenOk) throw new MuxFrameError('length', `mux frame type 0x${type.toString(16)} with a payload of ${len} bytes`);
  if (connectionFrame !== (id === 0)) throw new MuxFrameError('stream', `mux frame type 0x${type.toString(16)} on stream ${id}`);
  const need = HEADER_LEN + len;
  if (message.length < need) throw new MuxFrameError('truncated', `truncated mux frame: ${message.length} of ${need} bytes`);
  if (message.length > need) throw new MuxFrameError('trailing', `mux message has ${message.length - need} bytes after its frame`);
  const payload = message.subarray(HEADER_LEN, need);
  const pv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  switch (type) {
    case FrameType.OPEN:
      return { type: 'open', id };
    case FrameType.DATA:
      return { type: 'data', id, data: payload };
    case FrameType.FINISH:
      return { type: 'finish', id };
    case FrameType.RESET:
      return { type: 'reset', id, code: pv.getUint32(0) };
    case FrameType.STOP:
      return { type: 'stop', id, code: pv.getUint32(0) };
    case FrameType.CREDIT: {
      const increment = pv.getUint32(0);
      if (increment === 0) throw new MuxFrameError('credit', `mux CREDIT of 0 on stream ${id}`);
      return { type: 'credit', id, increment };
    }
    case FrameType.PING:
      return { type: 'ping', payload: payload.slice() };
    case FrameType.PONG:
      return { type: 'pong', payload: payload.slice() };
    default: {
      let reason: string;
      try {
        reason = strictDecoder.decode(payload.subarray(4));
      } catch {
        throw new MuxFrameError('reason', 'mux GOAWAY reason is not UTF-8');
      }
      return { type: 'goaway', code: pv.getUint32(0), reason };
    }
  }
}

/** The part of a WebSocket the session uses (a real `WebSocket` fits it). */
export interface SocketLike {
  binaryType: BinaryType;
  readonly readyState: number;
  send(data: Uint8Array<ArrayBuffer>): void;
  close(code?: number, reason?: string): void;
  readonly bufferedAmount: number;
  onopen: ((ev: Event) => unknown) | null;
  onmessage: ((ev: MessageEvent) => unknown) | null;
  onclose: ((ev: CloseEvent) => unknown) | null;
  onerror: ((ev: Event) => unknown) | null;
}

/** How a mux session closed (the shape of `WebTransportCloseInfo`). */
export interface MuxCloseInfo {
  closeCode: number;
  reason: string;
}

/** A stream error carrying the peer's code, like `WebTransportError.streamErrorCode`. */
export class MuxStreamError extends Error {
  constructor(
    message: string,
    readonly streamErrorCode: number | null,
  ) {
    super(message);
    this.name = 'WebTransportError';
  }
}

/** Options of a {@link MuxSession}. */
export interface MuxOptions {
  /** Time between PINGs (ms); 10 s. */
  pingIntervalMs?: number;
  /** Silence after which the session is closed (ms); 30 s. */
  idleTimeoutMs?: number;
}

interface StreamState {
  id: number;
  credit: number;
  creditWaiters: (() => void)[];
  stoppedCode: number | null;
  sendDone: boolean;
  readController: ReadableStreamDefaultController<Uint8Array> | null;
  recvDone: boolean;
  unacked: number;
}

/**
 * A mux session over one WebSocket (the dialing side: odd stream ids). `ready`
 * resolves once the WebSocket is open; `closed` once it ends, with the GOAWAY's code and
 * reason (rejects when it was lost without one, as WebTransport's does).
 */
export class MuxSession {
  readonly ready: Promise<void>;
  readonly closed: Promise<MuxCloseInfo>;
  private resolveClosed!: (info: MuxCloseInfo) => void;
  private rejectClosed!: (err: Error) => void;
  private streams = new Map<number, StreamState>();
  private nextId = 1;
  private done: MuxCloseInfo | Error | null = null;
  private lastRx = Date.now();
  private timer: ReturnType<typeof setInterval> | undefined;
  private pings = 0;

  constructor(
    private readonly socket: SocketLike,
    options: MuxOptions = {},
  ) {
    socket.binaryType = 'arraybuffer';
    this.closed = new Promise<MuxCloseInfo>((resolve, reject) => {
      this.resolveClosed = resolve;
      this.rejectClosed = reject;
    });
    // Nobody may await `closed` before it settles; a rejection must not be unhandled.
    this.closed.catch(() => {});
    this.ready = new Promise<void>((resolve, reject) => {
      if (socket.readyState === 1) resolve();
      socket.onopen = () => resolve();
      socket.onerror = () => reject(new Error('the WebSocket failed'));
      socket.onclose = (ev) => {
        reject(new Error(`the WebSocket closed (${ev.code})`));
        this.finish(new Error(`connection lost: the WebSocket closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`));
      };
    });
    this.ready.catch(() => {});
    socket.onmessage = (ev: MessageEvent) => this.onMessage(ev.data);
    const interval = options.pingIntervalMs ?? 10_000;
    const idle = options.idleTimeoutMs ?? 30_000;
    this.timer = setInterval(() => {
      if (Date.now() - this.lastRx >= idle) {
        this.goaway(MuxCode.IDLE_TIMEOUT, `no frame from the relay for ${Date.now() - this.lastRx} ms`);
        return;
      }
      const payload = new Uint8Array(8);
      new DataView(payload.buffer).setUint32(4, ++this.pings);
      this.send({ type: 'ping', payload });
    }, interval);
  }

  /** Streams open now. */
  get streamCount(): number {
    return this.streams.size;
  }

  private send(frame: Frame): void {
    if (this.done || this.socket.readyState !== 1) return;
    this.socket.send(encodeFrame(frame));
  }

  private finish(result: MuxCloseInfo | Error): void {
    if (this.done) return;
    this.done = result;
    clearInterval(this.timer);
    const err =
      result instanceof Error ? new MuxStreamError(result.message, null) : new MuxStreamError(`session closed: ${result.reason}`, null);
    for (const s of this.streams.values()) this.failStream(s, err);
    this.streams.clear();
    if (result instanceof Error) this.rejectClosed(result);
    else this.resolveClosed(result);
  }

  private failStream(s: StreamState, err: Error): void {
    if (!s.recvDone) {
      s.recvDone = true;
      try {
        s.readController?.error(err);
      } catch {
        /* already closed */
      }
    }
    s.sendDone = true;
    s.stoppedCode ??= -1;
    for (const w of s.creditWaiters.splice(0)) w();
  }

  private goaway(code: number, reason: string): void {
    this.send({ type: 'goaway', code, reason });
    this.finish({ closeCode: code, reason });
    try {
      this.socket.close(1000, 'mux closed');
    } catch {
      /* closing anyway */
    }
  }

  /** Closes the session with a GOAWAY (WebTransport's `close`). */
  close(info: { closeCode?: number; reason?: string } = {}): void {
    if (this.done) return;
    this.goaway(info.closeCode ?? 0, info.reason ?? '');
  }

  private onMessage(data: unknown): void {
    if (this.done) return;
    this.lastRx = Date.now();
    if (!(data instanceof ArrayBuffer)) {
      this.goaway(MuxCode.PROTOCOL_ERROR, 'a WebSocket text message');
      return;
    }
    let frame: Frame;
    try {
      frame = decodeFrame(new Uint8Array(data));
    } catch (err) {
      this.goaway(MuxCode.PROTOCOL_ERROR, err instanceof Error ? err.message : String(err));
      return;
    }
    this.handle(frame);
  }

  private handle(frame: Frame): void {
    switch (frame.type) {
      case 'ping':
        this.send({ type: 'pong', payload: frame.payload });
        return;
      case 'pong':
        return;
      case 'goaway':
        this.finish({ closeCode: frame.code, reason: frame.reason });
        try {
          this.socket.close(1000, 'mux closed');
        } catch {
          /* closing anyway */
        }
        return;
      case 'open':
        // Browsers accept no streams: refuse it, keep the session.
        this.send({ type: 'reset', id: frame.id, code: MuxCode.REFUSED_STREAM });
        this.send({ type: 'stop', id: frame.id, code: MuxCode.REFUSED_STREAM });
        return;
      default:
        break;
    }
    const s = this.streams.get(frame.id);
    if (!s) {
      // Late frames for a stream that is over are dropped; others break the rules.
      const known = frame.id % 2 === 1 ? frame.id < this.nextId : true;
      if (!known) this.goaway(MuxCode.PROTOCOL_ERROR, `frame for stream ${frame.id}, which was never opened`);
      return;
    }
    switch (frame.type) {
      case 'data':
        if (s.recvDone) return;
        s.readController?.enqueue(frame.data);
        return;
      case 'finish':
        if (!s.recvDone) {
          s.recvDone = true;
          s.readController?.close();
        }
        this.collect(s);
        return;
      case 'reset':
        if (!s.recvDone) {
          s.recvDone = true;
          s.readController?.error(new MuxStreamError(`stream reset by the relay (code ${frame.code})`, frame.code));
        }
        this.collect(s);
        return;
      case 'stop':
        if (s.stoppedCode === null) s.stoppedCode = frame.code;
        if (!s.sendDone) {
          s.sendDone = true;
          this.send({ type: 'reset', id: s.id, code: frame.code });
        }
        for (const w of s.creditWaiters.splice(0)) w();
        this.collect(s);
        return;
      case 'credit':
        s.credit += frame.increment;
        for (const w of s.creditWaiters.splice(0)) w();
        return;
    }
  }

  private collect(s: StreamState): void {
    if (s.sendDone && s.recvDone) this.streams.delete(s.id);
  }

  /** Opens a bidirectional stream (WebTransport's `createBidirectionalStream`). */
  async createBidirectionalStream(): Promise<{
    readable: ReadableStream<Uint8Array>;
    writable: WritableStream<Uint8Array>;
  }> {
    await this.ready;
    if (this.done) {
      throw new MuxStreamError(this.done instanceof Error ? this.done.message : `session closed: ${this.done.reason}`, null);
    }
    const id = this.nextId;
    this.nextId += 2;
    const s: StreamState = {
      id,
      credit: INITIAL_WINDOW,
      creditWaiters: [],
      stoppedCode: null,
      sendDone: false,
      readController: null,
      recvDone: false,
      unacked: 0,
    };
    this.streams.set(id, s);
    this.send({ type: 'open', id });
    const readable = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          s.readController = controller;
        },
        cancel: (reason) => {
          if (!s.recvDone) {
            s.recvDone = true;
            this.send({ type: 'stop', id, code: codeOf(reason) });
            this.collect(s);
          }
        },
      },
      {
        // Bytes queued count against the window: credit is granted as the page reads.
        highWaterMark: 0,
        size: (chunk) => chunk.byteLength,
      },
    );
    // Grant credit as chunks leave the queue to the reader.
    const reader = readable.getReader();
    const granting = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        try {
          const { value, done } = await reader.read();
          if (done) {
            controller.close();
            return;
          }
          controller.enqueue(value);
          s.unacked += value.byteLength;
          if (!s.recvDone && s.unacked >= INITIAL_WINDOW / 2) {
            this.send({ type: 'credit', id, increment: s.unacked });
            s.unacked = 0;
          }
        } catch (err) {
          controller.error(err);
        }
      },
      cancel: (reason) => reader.cancel(reason),
    });
    const writable = new WritableStream<Uint8Array>({
      write: async (chunk) => {
        let offset = 0;
        while (offset < chunk.byteLength) {
          if (s.stoppedCode !== null || s.sendDone) {
            throw new MuxStreamError(
              s.stoppedCode !== null && s.stoppedCode >= 0
                ? `stream stopped by the relay (code ${s.stoppedCode})`
                : 'stream closed',
              s.stoppedCode !== null && s.stoppedCode >= 0 ? s.stoppedCode : null,
            );
          }
          if (s.credit === 0) {
            await new Promise<void>((resolve) => s.creditWaiters.push(resolve));
            continue;
          }
          const n = Math.min(chunk.byteLength - offset, MAX_DATA, s.credit);
          s.credit -= n;
          this.send({ type: 'data', id, data: chunk.subarray(offset, offset + n) });
          offset += n;
        }
      },
      close: () => {
        if (!s.sendDone) {
          s.sendDone = true;
          this.send({ type: 'finish', id });
          this.collect(s);
        }
      },
      abort: (reason) => {
        if (!s.sendDone) {
          s.sendDone = true;
          this.send({ type: 'reset', id, code: codeOf(reason) });
          this.collect(s);
        }
      },
    });
    return { readable: granting, writable };
  }
}

function codeOf(reason: unknown): number {
  if (reason && typeof reason === 'object' && 'streamErrorCode' in reason) {
    const code = (reason as { streamErrorCode: unknown }).streamErrorCode;
    if (typeof code === 'number') return code >>> 0;
  }
  return 0;
}

/** Opens a mux session on a WebSocket to `url` (ws: or wss:). */
export function connectMux(url: string, options: MuxOptions = {}): MuxSession {
  return new MuxSession(new WebSocket(url) as unknown as SocketLike, options);
}
