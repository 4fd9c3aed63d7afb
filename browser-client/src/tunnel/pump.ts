/**
 * {@link StreamPump}: moves bytes between one WebTransport bidirectional stream and one
 * sans-IO protocol machine (`machine/request.ts`, `machine/status.ts`), and is the only
 * place with timers: it arms one for the machine's deadline and hands the machine that
 * deadline as "now" when it fires (the timer is the clock).
 *
 * The rules live in the machines. The pump adds only what needs I/O: on an end-to-end
 * encrypted stream it splits the frames and opens each one (frames → open → envelope →
 * machine), it turns a failed read into a {@link TransportError}, and it finishes or
 * resets the stream when its owner says how the exchange ended.
 */

import type { ResponseOpener } from '../e2e/index';
import { openAnswer } from '../e2e/stream';
import { FrameReader, type Envelope } from './codec';
import { TransportError, errorMessage } from './errors';

/** What the pump needs from a machine. */
export interface PumpedMachine<E> {
  /** Whether the exchange is over (no more events). */
  readonly isDone: boolean;
  /** Bytes to send, if any are queued. */
  pollTransmit(): Uint8Array | null;
  /** Bytes received (plain streams). */
  receive(bytes: Uint8Array): E[];
  /** The peer finished its side (FIN). */
  finish(): E | null;
  /** When {@link handleTimeout} is due, on the pump's clock (`Date.now()`). */
  deadline(): number | null;
  /** The clock reached `now`. */
  handleTimeout(now: number): E | null;
}

/** An encrypted stream: each frame is opened with `opener`, then given to `handle`. */
export interface OpenedStream<E> {
  opener: ResponseOpener;
  handle: (envelope: Envelope) => E | null;
}

/** See the module comment. */
export class StreamPump<E> {
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly frames = new FrameReader();
  private pendingRead: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;
  private wakeUp: (() => void) | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt: number | null = null;
  private expired: number | null = null;
  private interrupted: { error: unknown } | null = null;
  private settled = false;
  /** The first write that failed, if any (reported by what the peer answers, or with the stream's end). */
  writeError: unknown = null;

  constructor(
    stream: WebTransportBidirectionalStream,
    private readonly machine: PumpedMachine<E>,
    /** Turns a failed `read()` into the error to throw. */
    private readonly readFailure: (err: unknown) => TransportError,
    private readonly opened?: OpenedStream<E>,
  ) {
    this.writer = stream.writable.getWriter();
    this.reader = stream.readable.getReader();
  }

  /** Sends whatever the machine has queued. A failed write never fails the exchange by itself. */
  flush(): void {
    const bytes = this.machine.pollTransmit();
    if (bytes) {
      void this.writer.write(bytes).catch((err: unknown) => {
        this.writeError ??= err;
      });
    }
  }

  /**
   * Sends what the machine queued and resolves once the stream took it: for bulk sends
   * (an upload's chunks), so that no more than one write waits at a time. Rejects when
   * the write fails (the stream was reset or the session lost).
   */
  async flushAndWait(): Promise<void> {
    const bytes = this.machine.pollTransmit();
    if (!bytes) return;
    await this.writer.ready;
    await this.writer.write(bytes).catch((err: unknown) => {
      this.writeError ??= err;
      throw err;
    });
  }

  /** Sends what the machine queued (e.g. after a cancel), then finishes the sending side. */
  flushAndFinish(): void {
    this.flush();
    void this.writer.close().catch(() => {});
    this.wake();
  }

  /** Makes {@link events} throw `error` (at once, even while waiting for bytes). */
  interrupt(error: unknown): void {
    this.interrupted ??= { error };
    this.wake();
  }

  /** Makes {@link events} return (at once, even while waiting for bytes). */
  stop(): void {
    this.interrupt(STOP);
  }

  /**
   * Sends the machine's first bytes, then yields every event it gives for the bytes,
   * the FIN and the deadlines that follow, until it is done (its last event is the last
   * one yielded) or the pump is interrupted or stopped. Throws a {@link TransportError}
   * when the stream is reset, the session is lost, or (encrypted) a frame does not open.
   */
  async *events(): AsyncGenerator<E, void, undefined> {
    this.flush();
    while (!this.machine.isDone) {
      if (this.interrupted) {
        if (this.interrupted.error === STOP) return;
        throw this.interrupted.error;
      }
      if (this.expired !== null) {
        const event = this.machine.handleTimeout(this.expired);
        this.expired = null;
        if (event) yield event;
        continue;
      }
      this.armTimer();
      this.pendingRead ??= this.reader.read();
      const woken = new Promise<null>((resolve) => (this.wakeUp = () => resolve(null)));
      let chunk: ReadableStreamReadResult<Uint8Array> | null;
      try {
        chunk = await Promise.race([this.pendingRead, woken]);
      } catch (err) {
        this.pendingRead = null;
        if (this.interrupted) continue;
        throw this.readFailure(err);
      }
      this.flush();
      if (chunk === null) continue; // woken: a timer, an interruption or a cancel
      this.pendingRead = null;
      if (chunk.done) {
        const event = this.atFin();
        if (event) yield event;
        return;
      }
      for (const event of await this.eventsIn(chunk.value)) {
        if (this.isStopped()) return;
        yield event;
      }
    }
  }

  /** The exchange ended well (or with the peer's ERROR): finish our side, read the rest in the background. */
  closeCleanly(): void {
    if (this.settle()) return;
    void this.writer.close().catch(() => {});
    void drain(this.reader, this.pendingRead);
  }

  /** The exchange failed here: reset both directions. */
  reset(reason?: unknown): void {
    if (this.settle()) return;
    void this.writer.abort(reason).catch(() => {});
    void this.reader.cancel(reason).catch(() => {});
  }

  /** Clears the timer; true when the stream was already settled. */
  private settle(): boolean {
    clearTimeout(this.timer);
    this.timerAt = null;
    const was = this.settled;
    this.settled = true;
    return was;
  }

  private isStopped(): boolean {
    return this.interrupted?.error === STOP;
  }

  private wake(): void {
    this.wakeUp?.();
  }

  private armTimer(): void {
    const at = this.machine.deadline();
    if (at === this.timerAt) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    if (at === null) return;
    this.timer = setTimeout(() => {
      this.expired = at;
      this.timerAt = null;
      this.wake();
    }, Math.max(0, at - Date.now()));
  }

  private async eventsIn(bytes: Uint8Array): Promise<E[]> {
    if (!this.opened) return this.machine.receive(bytes);
    this.frames.push(bytes);
    const events: E[] = [];
    while (!this.machine.isDone) {
      let body: Uint8Array | null;
      try {
        body = this.frames.next();
      } catch (err) {
        throw new TransportError('malformed_frame', errorMessage(err), { cause: err });
      }
      if (body === null) break;
      let envelope: Envelope;
      try {
        envelope = (await openAnswer(this.opened.opener, body)).envelope;
      } catch (err) {
        throw new TransportError('e2e_failed', errorMessage(err), { cause: err });
      }
      const event = this.opened.handle(envelope);
      if (event) events.push(event);
    }
    return events;
  }

  private atFin(): E | null {
    if (this.opened) {
      try {
        this.frames.finish();
      } catch (err) {
        throw new TransportError('malformed_frame', errorMessage(err), { cause: err });
      }
    }
    return this.machine.finish();
  }
}

const STOP = Symbol('stop');

/** Reads a stream to its end (after a read already in flight), ignoring what arrives and any error. */
async function drain(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  pending: Promise<ReadableStreamReadResult<Uint8Array>> | null,
): Promise<void> {
  try {
    if (pending && (await pending).done) return;
    while (!(await reader.read()).done) {
      // discard
    }
  } catch {
    // reset or session gone: nothing left to do
  } finally {
    reader.releaseLock();
  }
}
