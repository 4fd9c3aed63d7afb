/** An in-memory stand-in for a WebTransport session to the relay, for tests of code above RelayClient. */

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
  readonly received = new FrameReader();
  readonly frames: Uint8Array[] = [];
  writeClosed = false;
  reset = false;
  private ctrl!: ReadableStreamDefaultController<Uint8Array>;

  readonly readable = new ReadableStream<Uint8Array>({
    start: (c) => {
      this.ctrl = c;
    },
    cancel: () => {
      this.reset = true;
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
      this.reset = true;
    },
  });

  /** The stream's open header, once it arrived. */
  header(): OpenHeader | null {
    return this.frames[0] ? decodeOpenHeader(this.frames[0]) : null;
  }

  /** The envelopes the browser sent after its header. */
  envelopes(): Envelope[] {
    return this.frames.slice(1).map(decodeEnvelope);
  }

  /** Sends one envelope to the browser. */
  send(body: Body, requestId = 1, deviceId = ''): void {
    this.ctrl.enqueue(encodeFrame(encodeEnvelope({ requestId, deviceId, body })));
  }

  finish(): void {
    this.ctrl.close();
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

/** Lets queued stream work and promise callbacks run until `cond` holds. */
export async function until(cond: () => boolean, what = 'condition'): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 0));
  }
  throw new Error(`timed out waiting for ${what}`);
}
