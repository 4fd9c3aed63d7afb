/**
 * {@link ClientRequest}: the browser's end of one request stream, as a sans-IO state
 * machine — the TypeScript mirror of the Rust `aisa_tunnel::proto::ClientRequest`, checked
 * against the same whole-exchange vectors (`tunnel/vectors/exchanges.json`).
 *
 * It sends the stream-open header and the request, then reads STREAM_CHUNKs until
 * exactly one final message: STREAM_END, DEVICE_STATUS (the answer to GET_STATUS), one
 * of the history answers (HISTORY_PAGE, HISTORY_RUN, HISTORY_DELETED), FILES_PAGE,
 * FILE_STORED (after FILE_PROGRESS messages), or ERROR.
 *
 * - Any other message type ends the request as unexpected.
 * - The stream ending (FIN) before the final message, or inside a frame, fails it.
 * - {@link ClientRequest.cancel} queues a CANCEL (the caller finishes its sending side
 *   after it); chunks that still arrive are dropped, and if no final message comes
 *   within {@link CANCEL_GRACE_MS} the request fails (the caller resets the stream).
 * - Nothing is reported after the request is over; later bytes and the FIN are ignored.
 *
 * No timers and no I/O: the caller passes the time in (`now`, in milliseconds on any
 * clock it likes), asks {@link ClientRequest.deadline} when to call
 * {@link ClientRequest.handleTimeout}, sends what {@link ClientRequest.pollTransmit}
 * returns, and feeds received bytes to {@link ClientRequest.receive}. On an end-to-end
 * encrypted stream the caller splits and opens the frames itself and hands each opened
 * envelope to {@link ClientRequest.handleEnvelope}.
 */

import {
  FrameReader,
  encodeEnvelope,
  encodeFrame,
  encodeOpenHeader,
  type Envelope,
  type OpenHeader,
} from '../codec';
import { Refusal, nextEnvelope } from './refusal';

/**
 * How long to wait, after CANCEL, for the request's last message before giving up on
 * the stream (the Rust side's `CANCEL_GRACE`).
 */
export const CANCEL_GRACE_MS = 5_000;

/** What a {@link ClientRequest} learned. */
export type ClientEvent =
  /** A message before the answer's end: a STREAM_CHUNK (not reported after a CANCEL). */
  | { type: 'message'; envelope: Envelope }
  /** The request is over with its last message: STREAM_END, or DEVICE_STATUS answering GET_STATUS. */
  | { type: 'done'; envelope: Envelope }
  /** The request is over and failed (an ERROR from the relay or desktop is `remote_error`). */
  | { type: 'failed'; refusal: Refusal };

/** See the module comment. */
export class ClientRequest {
  private readonly frames = new FrameReader();
  private out: Uint8Array[] = [];
  private cancelDeadline: number | null = null;
  private done = false;

  private constructor(
    private readonly requestId: number,
    private readonly deviceId: string,
    header: OpenHeader,
    firstBody: Uint8Array,
  ) {
    this.out.push(encodeFrame(encodeOpenHeader(header)), encodeFrame(firstBody));
  }

  /** Opens a plain request: queues `header` and `request`. */
  static plain(header: OpenHeader, request: Envelope): ClientRequest {
    return new ClientRequest(request.requestId, header.deviceId, header, encodeEnvelope(request));
  }

  /** Opens a request whose first frame's body is given as is (a sealed request). */
  static withBody(header: OpenHeader, requestId: number, body: Uint8Array): ClientRequest {
    return new ClientRequest(requestId, header.deviceId, header, body);
  }

  /** Bytes to send, if any are queued (all of them, in order, as one array). */
  pollTransmit(): Uint8Array | null {
    if (this.out.length === 0) return null;
    const parts = this.out;
    this.out = [];
    if (parts.length === 1) return parts[0]!;
    const total = parts.reduce((n, p) => n + p.length, 0);
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    return bytes;
  }

  /** Whether the request is over. */
  get isDone(): boolean {
    return this.done;
  }

  /** Whether a CANCEL was sent. */
  get isCancelled(): boolean {
    return this.cancelDeadline !== null;
  }

  /**
   * Asks the desktop to stop at `now`: queues a plain CANCEL (finish the sending side
   * after it) and starts the grace period. Does nothing once the request is over or a
   * CANCEL was already sent.
   */
  cancel(now: number): void {
    this.cancelWithBody(now, encodeEnvelope({ requestId: this.requestId, deviceId: this.deviceId, body: { type: 'Cancel' } }));
  }

  /**
   * Queues one more frame after the request (an upload's FILE_CHUNK; `body` is the
   * encoded envelope, or the sealed control message on an encrypted stream). Nothing is
   * queued once the request is over or cancelled.
   */
  sendFrame(body: Uint8Array): void {
    if (this.done || this.cancelDeadline !== null) return;
    this.out.push(encodeFrame(body));
  }

  /** Like {@link cancel}, with the CANCEL frame's body given (sealed). */
  cancelWithBody(now: number, body: Uint8Array): void {
    if (this.done || this.cancelDeadline !== null) return;
    this.out.push(encodeFrame(body));
    this.cancelDeadline = now + CANCEL_GRACE_MS;
  }

  /** When to call {@link handleTimeout}: the end of the cancel grace, or null. */
  deadline(): number | null {
    return this.done ? null : this.cancelDeadline;
  }

  /** Ends the request if the cancel grace is over at `now`. */
  handleTimeout(now: number): ClientEvent | null {
    const deadline = this.deadline();
    if (deadline === null || now < deadline) return null;
    return this.fail(Refusal.cancelUnanswered(CANCEL_GRACE_MS));
  }

  /** Takes bytes from the relay (plain streams); returns the events, in order. */
  receive(bytes: Uint8Array): ClientEvent[] {
    if (this.done) return [];
    this.frames.push(bytes);
    const events: ClientEvent[] = [];
    while (!this.done) {
      const envelope = nextEnvelope(this.frames);
      if (envelope === null) break;
      if (envelope instanceof Refusal) {
        events.push(this.fail(envelope));
        break;
      }
      const event = this.handleEnvelope(envelope);
      if (event) events.push(event);
    }
    return events;
  }

  /** Takes one message (already opened, on an encrypted stream). */
  handleEnvelope(envelope: Envelope): ClientEvent | null {
    if (this.done) return null;
    const b = envelope.body;
    switch (b.type) {
      case 'StreamChunk':
      case 'FileProgress':
        return this.isCancelled ? null : { type: 'message', envelope };
      case 'StreamEnd':
      case 'DeviceStatus':
      case 'HistoryPage':
      case 'HistoryRun':
      case 'HistoryDeleted':
      case 'FilesPage':
      case 'FileStored':
        this.done = true;
        return { type: 'done', envelope };
      case 'Error':
        return this.fail(Refusal.remote(b.code, b.message));
      default:
        return this.fail(Refusal.unexpectedMessage(b.type, 'on a request stream'));
    }
  }

  /** The relay finished the stream. Before the final message that fails the request. */
  finish(): ClientEvent | null {
    if (this.done) return null;
    try {
      this.frames.finish();
    } catch (err) {
      return this.fail(Refusal.framing(err));
    }
    return this.fail(Refusal.endedEarly('before the answer was complete'));
  }

  private fail(refusal: Refusal): ClientEvent {
    this.done = true;
    return { type: 'failed', refusal };
  }
}
