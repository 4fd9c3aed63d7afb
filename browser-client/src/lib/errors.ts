/** One readable sentence for anything an API call, a stream or an action threw. */

import { RemoteError, TransportError, errorMessage } from '../tunnel/client';
import { ApiError } from './api';

/** The error's code (`device_offline`, `http_404`, `network`, …) and message. */
export function describeError(err: unknown): { code: string; message: string } {
  if (err instanceof DOMException && err.name === 'AbortError') return { code: 'cancelled', message: 'cancelled' };
  if (err instanceof RemoteError || err instanceof TransportError || err instanceof ApiError) {
    return { code: err.code, message: err.message };
  }
  return { code: 'internal', message: errorMessage(err) };
}
