/**
 * {@link StatusWatch}: the browser's end of a device-status stream, as a sans-IO state
 * machine (no timers, no I/O; the caller moves the bytes).
 *
 * The browser sends only a stream-open header of kind `Control` with an empty device id;
 * the relay answers with one DEVICE_STATUS per device of the user (the snapshot), one
 * STATUS_SNAPSHOT_END (protocol 1.1; also to a user with no devices), then a
 * DEVICE_STATUS whenever a device comes online or goes offline, until it finishes the
 * stream (a reader that falls behind is finished; a new watch gets a fresh snapshot).
 *
 * - An ERROR ends the watch (`remote_error`).
 * - Any other message type, or a second STATUS_SNAPSHOT_END, ends it as unexpected.
 * - The stream ending inside a frame fails it; a clean FIN ends it (`ended`), whether or
 *   not the snapshot was complete (a relay older than 1.1 sends no end marker).
 */

import { FrameReader, encodeFrame, encodeOpenHeader } from '../codec';
import { Refusal, nextEnvelope } from './refusal';

/** What a {@link StatusWatch} learned. */
export type StatusEvent =
  /** One device's state: part of the snapshot until `snapshot_end`, a change after it. */
  | { type: 'status'; deviceId: string; online: boolean; nodeVersion: string }
  /** The snapshot is complete; it held `devices` DEVICE_STATUS messages. */
  | { type: 'snapshot_end'; devices: number }
  /** The relay finished the stream cleanly. Nothing is reported after this. */
  | { type: 'ended' }
  /** The watch failed. Nothing is reported after this. */
  | { type: 'failed'; refusal: Refusal };

/** Where the rules are broken, as the refusal messages say it. */
const PLACE = 'on a device-status stream';

/** See the module comment. */
export class StatusWatch {
  private readonly frames = new FrameReader();
  private out: Uint8Array | null;
  private snapshotEnded = false;
  private done = false;

  /** Queues the stream-open header with the user's access token. */
  constructor(token: string) {
    this.out = encodeFrame(encodeOpenHeader({ deviceId: '', kind: 'Control', token, e2e: null }));
  }

  /** Bytes to send, if any are queued (only the header, once). */
  pollTransmit(): Uint8Array | null {
    const out = this.out;
    this.out = null;
    return out;
  }

  /** Whether the watch is over. */
  get isDone(): boolean {
    return this.done;
  }

  /** Whether STATUS_SNAPSHOT_END has arrived. */
  get isSnapshotComplete(): boolean {
    return this.snapshotEnded;
  }

  /** A status stream has no deadline of its own. */
  deadline(): number | null {
    return null;
  }

  /** A status stream has no deadline of its own: nothing happens. */
  handleTimeout(_now: number): StatusEvent | null {
    return null;
  }

  /** Takes bytes from the relay; returns the events, in order. */
  receive(bytes: Uint8Array): StatusEvent[] {
    if (this.done) return [];
    this.frames.push(bytes);
    const events: StatusEvent[] = [];
    while (!this.done) {
      const env = nextEnvelope(this.frames);
      if (env === null) break;
      if (env instanceof Refusal) {
        events.push(this.fail(env));
        break;
      }
      const b = env.body;
      switch (b.type) {
        case 'DeviceStatus':
          events.push({ type: 'status', deviceId: env.deviceId, online: b.online, nodeVersion: b.nodeVersion });
          break;
        case 'StatusSnapshotEnd':
          if (this.snapshotEnded) {
            events.push(this.fail(Refusal.unexpectedMessage('second StatusSnapshotEnd', PLACE)));
          } else {
            this.snapshotEnded = true;
            events.push({ type: 'snapshot_end', devices: b.devices });
          }
          break;
        case 'Error':
          events.push(this.fail(Refusal.remote(b.code, b.message)));
          break;
        default:
          events.push(this.fail(Refusal.unexpectedMessage(b.type, PLACE)));
      }
    }
    return events;
  }

  /** The relay finished the stream. */
  finish(): StatusEvent | null {
    if (this.done) return null;
    try {
      this.frames.finish();
    } catch (err) {
      return this.fail(Refusal.framing(err));
    }
    this.done = true;
    return { type: 'ended' };
  }

  private fail(refusal: Refusal): StatusEvent {
    this.done = true;
    return { type: 'failed', refusal };
  }
}
