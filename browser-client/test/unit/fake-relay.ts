/**
 * The one in-memory stand-in for a WebTransport session to the relay, shared by every
 * unit test of RelayClient and of the code above it: each stream the browser opens shows
 * up as a {@link FarEnd} that the test plays as the relay or the desktop.
 */

import { RelayClient, type TransportLike } from '../../src/tunnel/client';
import {
  FrameReader,
  decodeEnvelope,
  decodeOpenHeader,
  encodeEnvelope,
  encodeFrame,
  type Body,
  type Envelope,
  type OpenHeader,
} from '../../src/tunnel/codec';

/** The far end of one bidirectional stream, as the relay/desktop sees it. */
export class FarEnd {
  /** The browser's bytes, reassembled into frames. */
  readonly received = new FrameReader();
  /** Every whole frame body the browser sent, in order (the header first). */
  readonly frames: Uint8Array[] = [];
  /** The browser finished its write side (FIN). */
  writeClosed = false;
  /** The browser reset its write side. */
  writeAborted = false;
  /** The browser cancelled its read side (STOP_SENDING). */
  readCancelled = false;
  private ctrl!: ReadableStreamDefaultController<Uint8Array>;

  readonly readable = new ReadableStream<Uint8Array>({
    start: (c) => {
      this.ctrl = c;
    },
    cancel: () => {
      this.readCancelled = true;
    },
  });

  readonly writable = new WritableStream<Uint8Array>({
    write: (chunk) => {
      this.received.push(chunk);
      for (let f = this.received.next(); f !== null; f = this.received.next()) this.frames.push(f);
    },
    close: () => {
      this.writeClosed = true;
    },
    abort: () => {
      this.writeAborted = true;
    },
  });

  /** True once the browser reset the stream in either direction. */
  get reset(): boolean {
    return this.writeAborted || this.readCancelled;
  }

  /** The stream's open header, once it arrived. */
  header(): OpenHeader | null {
    return this.frames[0] ? decodeOpenHeader(this.frames[0]) : null;
  }

  /** The envelopes the browser sent after its header. */
  envelopes(): Envelope[] {
    return this.frames.slice(1).map(decodeEnvelope);
  }

  /** Sends raw bytes to the browser. */
  sendRaw(bytes: Uint8Array): void {
    this.ctrl.enqueue(bytes);
  }

  /** Sends one envelope to the browser. */
  send(body: Body, requestId = 1, deviceId = ''): void {
    this.sendRaw(encodeFrame(encodeEnvelope({ requestId, deviceId, body })));
  }

  /** Sends a DEVICE_STATUS for `deviceId`, as the relay does on a device-status stream. */
  status(deviceId: string, online: boolean, nodeVersion = '0.1.0'): void {
    this.send({ type: 'DeviceStatus', online, nodeVersion, apps: [] }, 0, deviceId);
  }

  /** Finishes the stream towards the browser (FIN). */
  finish(): void {
    this.ctrl.close();
  }

  /** Resets the stream towards the browser with an application error code. */
  resetStream(code: number): void {
    this.ctrl.error(Object.assign(new Error('stream reset'), { source: 'stream', streamErrorCode: code }));
  }
}

/** A fake session: every stream the browser opens shows up in `streams`. */
export class FakeTransport implements TransportLike {
  readonly ready = Promise.resolve(undefined);
  readonly closed: Promise<WebTransportCloseInfo>;
  readonly streams: FarEnd[] = [];
  private resolveClosed!: (info: WebTransportCloseInfo) => void;
  private rejectClosed!: (err: unknown) => void;

  constructor() {
    this.closed = new Promise((resolve, reject) => {
      this.resolveClosed = resolve;
      this.rejectClosed = reject;
    });
  }

  async createBidirectionalStream(): Promise<WebTransportBidirectionalStream> {
    const far = new FarEnd();
    this.streams.push(far);
    return { readable: far.readable, writable: far.writable } as unknown as WebTransportBidirectionalStream;
  }

  close(info?: WebTransportCloseInfo): void {
    this.resolveClosed({ closeCode: info?.closeCode ?? 0, reason: info?.reason ?? '' });
  }

  /** The session is lost (not a clean close). */
  lose(err: Error): void {
    this.rejectClosed(err);
  }
}

/** A RelayClient over a fresh fake transport. */
export function fakeClient(): { transport: FakeTransport; client: RelayClient } {
  const transport = new FakeTransport();
  return { transport, client: RelayClient.fromTransport(transport) };
}

/**
 * Lets queued stream work and promise callbacks (WebCrypto's included) run until `cond`
 * holds, for up to about 5 s. Yields with `setImmediate`, so it works while a test fakes
 * `setTimeout`.
 */
export async function until(cond: () => boolean, what = 'condition'): Promise<void> {
  const start = Date.now();
  for (let i = 0; i < 200_000; i++) {
    if (cond()) return;
    if (i >= 2000 && Date.now() - start > 5000) break;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`timed out waiting for ${what}`);
}
