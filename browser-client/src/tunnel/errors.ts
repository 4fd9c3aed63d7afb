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
