/** How the browser's relay client reports failures: the peer's ERROR, or the transport's. */

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

/**
 * The ERROR codes of the wire protocol (docs/protocol.md, "ERROR codes"), as the relay
 * and the desktop send them. A code not in this list comes from a newer peer: show its
 * message. `unavailable`: a relay node of a cluster cannot tell where the device is
 * (its shared state is down) and the device is not on that node; try again shortly.
 */
export const WIRE_ERROR_CODES = [
  'malformed_frame',
  'unsupported_version',
  'unauthenticated',
  'forbidden',
  'unknown_device',
  'device_offline',
  'unknown_app',
  'unknown_action',
  'invalid_payload',
  'app_failed',
  'provider_error',
  'cancelled',
  'unsupported',
  'peer_gone',
  'limit_exceeded',
  'internal',
  'denied',
  'install_failed',
  'busy',
  'unavailable',
  'unknown_run',
] as const;

/** One of {@link WIRE_ERROR_CODES}. */
export type WireErrorCode = (typeof WIRE_ERROR_CODES)[number];

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

/** A readable message from anything thrown. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}
