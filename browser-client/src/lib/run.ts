/**
 * The state of one action run, as a reducer: idle → running (chunks arrive) → done
 * (STREAM_END), failed (ERROR or a transport failure) or, after a cancel request,
 * cancelled. Events that do not fit the current state are ignored, so that a late chunk
 * after the end or a second cancel changes nothing.
 */

import { sentenceFor } from './errors';

/** A run's state. `output` is the text streamed so far (all chunks, in order). */
export type RunState =
  | { phase: 'idle'; output: '' }
  | { phase: 'running'; output: string; chunks: number }
  | { phase: 'cancelling'; output: string; chunks: number }
  | { phase: 'done'; output: string; chunks: number; elapsedMs: number }
  | { phase: 'failed'; output: string; code: string; message: string }
  | { phase: 'cancelled'; output: string };

/** What happens to a run. */
export type RunEvent =
  | { type: 'start' }
  | { type: 'chunk'; data: string }
  | { type: 'end'; chunks: number; elapsedMs: number }
  | { type: 'error'; code: string; message: string }
  | { type: 'cancel' }
  | { type: 'cancelled' }
  | { type: 'reset' };

/** The state before any run. */
export const IDLE: RunState = { phase: 'idle', output: '' };

/** True while the run is going (including while a cancel is on its way). */
export function isActive(s: RunState): boolean {
  return s.phase === 'running' || s.phase === 'cancelling';
}

/** The next state. */
export function runReducer(s: RunState, e: RunEvent): RunState {
  switch (e.type) {
    case 'start':
      return isActive(s) ? s : { phase: 'running', output: '', chunks: 0 };
    case 'reset':
      return isActive(s) ? s : IDLE;
    case 'chunk':
      // Output that arrives after a cancel was asked for is not shown.
      return s.phase === 'running' ? { ...s, output: s.output + e.data, chunks: s.chunks + 1 } : s;
    case 'end':
      // A STREAM_END that wins the race against a cancel still counts.
      return isActive(s) ? { phase: 'done', output: s.output, chunks: e.chunks, elapsedMs: e.elapsedMs } : s;
    case 'error':
      if (!isActive(s)) return s;
      if (e.code === 'cancelled' && s.phase === 'cancelling') return { phase: 'cancelled', output: s.output };
      return { phase: 'failed', output: s.output, code: e.code, message: e.message };
    case 'cancel':
      return s.phase === 'running' ? { ...s, phase: 'cancelling' } : s;
    case 'cancelled':
      return isActive(s) ? { phase: 'cancelled', output: s.output } : s;
  }
}

/** The run's status line, for the live region. */
export function describeRun(s: RunState): string {
  switch (s.phase) {
    case 'idle':
      return '';
    case 'running':
      // Not the chunk count: a live region that changes with every chunk would keep
      // interrupting a screen reader.
      return 'Running…';
    case 'cancelling':
      return 'Cancelling…';
    case 'done':
      return `Done in ${formatMs(s.elapsedMs)}.`;
    case 'failed':
      return sentenceFor(s.code, s.message);
    case 'cancelled':
      return 'Cancelled';
  }
}

/** "850 ms", "2.4 s". */
export function formatMs(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}
