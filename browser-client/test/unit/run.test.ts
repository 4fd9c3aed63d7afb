/** The run state machine: chunks → end, error, cancel, and events that no longer fit. */

import { describe, expect, it } from 'vitest';
import { IDLE, describeRun, isActive, runReducer, type RunEvent, type RunState } from '../../src/lib/run';

function play(...events: RunEvent[]): RunState {
  return events.reduce(runReducer, IDLE);
}

describe('runReducer', () => {
  it('collects chunks in order and ends with STREAM_END', () => {
    const s = play({ type: 'start' }, { type: 'chunk', data: 'Hel' }, { type: 'chunk', data: 'lo' }, { type: 'end', chunks: 2, elapsedMs: 1234 });
    expect(s).toEqual({ phase: 'done', output: 'Hello', chunks: 2, elapsedMs: 1234 });
    expect(describeRun(s)).toBe('Done in 1.2 s.');
    expect(isActive(s)).toBe(false);
  });

  it('keeps the output so far when an ERROR arrives', () => {
    const s = play({ type: 'start' }, { type: 'chunk', data: 'part' }, { type: 'error', code: 'provider_error', message: 'HTTP 500' });
    expect(s).toEqual({ phase: 'failed', output: 'part', code: 'provider_error', message: 'HTTP 500' });
    expect(describeRun(s)).toBe(
      'The AI provider on your desktop answered with an error. Check its key and model on the desktop.',
    );
  });

  it('cancels: chunks after the request are dropped, the desktop’s cancelled ERROR ends it', () => {
    const running = play({ type: 'start' }, { type: 'chunk', data: 'a' });
    const cancelling = runReducer(running, { type: 'cancel' });
    expect(cancelling.phase).toBe('cancelling');
    expect(describeRun(cancelling)).toBe('Cancelling…');
    const late = runReducer(cancelling, { type: 'chunk', data: 'b' });
    expect(late.output).toBe('a');
    expect(runReducer(late, { type: 'error', code: 'cancelled', message: 'cancelled' })).toEqual({ phase: 'cancelled', output: 'a' });
    expect(runReducer(late, { type: 'cancelled' })).toEqual({ phase: 'cancelled', output: 'a' });
  });

  it('lets a STREAM_END that wins the race against a cancel count', () => {
    const s = play({ type: 'start' }, { type: 'cancel' }, { type: 'end', chunks: 0, elapsedMs: 5 });
    expect(s.phase).toBe('done');
  });

  it('ignores events that do not fit: a second start, late chunks, a cancel when idle', () => {
    const running = play({ type: 'start' }, { type: 'chunk', data: 'x' });
    expect(runReducer(running, { type: 'start' })).toBe(running);
    expect(runReducer(IDLE, { type: 'cancel' })).toBe(IDLE);
    expect(runReducer(IDLE, { type: 'chunk', data: 'x' })).toBe(IDLE);
    const done = runReducer(running, { type: 'end', chunks: 1, elapsedMs: 3 });
    expect(runReducer(done, { type: 'chunk', data: 'y' })).toBe(done);
    expect(runReducer(done, { type: 'error', code: 'internal', message: 'late' })).toBe(done);
    // A new run starts from empty output.
    expect(runReducer(done, { type: 'start' })).toEqual({ phase: 'running', output: '', chunks: 0 });
  });
});
