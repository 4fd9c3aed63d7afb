/**
 * {@link Refusal}: why a protocol machine ended a stream, the TypeScript mirror of the
 * Rust `aisa_tunnel::proto::Refusal` for the rules the browser's machines enforce.
 *
 * Each refusal has the wire's ERROR `code`, a short stable `reason` label and the human
 * `message`, worded as the Rust side words them (the exchange vectors compare all three).
 */

import { type Envelope, type FrameReader, decodeEnvelope } from '../codec';


/** The stable label of a refusal (the Rust side's `Refusal::reason`). */
export type RefusalReason =
  | 'malformed_frame'
  | 'malformed_message'
  | 'unexpected_message'
  | 'ended_early'
  | 'remote_error'
  | 'cancel_unanswered';

/** Why a machine ended its stream; see the module comment. */
export class Refusal {
  private constructor(
    /** The stable label: what rule was broken. */
    readonly reason: RefusalReason,
    /** The wire's ERROR code for it (for a remote ERROR: the code it carried). */
    readonly code: string,
    /** The human message. */
    readonly message: string,
    /** For `remote_error`: the ERROR envelope's own message. */
    readonly remoteMessage: string | null = null,
  ) {}

  /** The bytes break the framing rules (a frame over the limit, or cut off): the codec's error. */
  static framing(err: unknown): Refusal {
    return new Refusal('malformed_frame', 'malformed_frame', messageOf(err));
  }

  /** A frame is not a valid envelope: the codec's error. */
  static malformedMessage(err: unknown): Refusal {
    return new Refusal('malformed_message', 'malformed_frame', messageOf(err));
  }

  /** A message that has no place where it came, e.g. `unexpected Pong on a request stream`. */
  static unexpectedMessage(what: string, place: string): Refusal {
    return new Refusal('unexpected_message', 'unsupported', `unexpected ${what} ${place}`);
  }

  /** The peer ended the stream before the exchange was complete. */
  static endedEarly(when: string): Refusal {
    return new Refusal('ended_early', 'peer_gone', `the stream ended ${when}`);
  }

  /** The peer answered with an ERROR. */
  static remote(code: string, message: string): Refusal {
    return new Refusal('remote_error', code, `${code}: ${message}`, message);
  }

  /** The peer stopped answering after a CANCEL. */
  static cancelUnanswered(graceMs: number): Refusal {
    return new Refusal('cancel_unanswered', 'peer_gone', `no answer within ${Math.round(graceMs / 1000)} s of the CANCEL`);
  }
}

/**
 * Takes the next whole envelope out of `frames`: the envelope, `null` when more bytes
 * are needed, or the {@link Refusal} for bytes that break the framing or do not decode.
 */
export function nextEnvelope(frames: FrameReader): Envelope | Refusal | null {
  let body: Uint8Array | null;
  try {
    body = frames.next();
  } catch (err) {
    return Refusal.framing(err);
  }
  if (body === null) return null;
  try {
    return decodeEnvelope(body);
  } catch (err) {
    return Refusal.malformedMessage(err);
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
