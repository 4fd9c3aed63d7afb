/**
 * The page's action runs, kept above the screens: a run goes on while the person moves
 * to another screen, and its output, status and form are there when they come back.
 * One entry per key (the runner uses `<device>/<app>`), changed only through the
 * reducer of `run.ts`; entries are replaced, never mutated, so that React's
 * `useSyncExternalStore` sees each change.
 *
 * The store does not know how a run reaches the desktop: {@link RunStore.start} gets a
 * function that does it. Signing out drops every run ({@link RunStore.abortAll}).
 */

import type { ActionResult } from '../tunnel/client';
import { describeError } from './errors';
import { IDLE, isActive, runReducer, type RunEvent, type RunState } from './run';

/** One run's state, with the form it was started from. */
export interface RunEntry {
  state: RunState;
  /** The chosen action ('' before a choice). */
  action: string;
  /** The form's data. */
  formData: Record<string, unknown>;
  /**
   * A past run's action and input to fill the form with (History's "Run again"); the
   * runner applies it once it knows its form, then it is gone.
   */
  prefill?: { action: string; input: string };
}

const EMPTY: RunEntry = { state: IDLE, action: '', formData: {} };

/** Runs an action: what the store calls to start one. */
export type StartRun = (opts: { signal: AbortSignal; onChunk: (data: string) => void }) => Promise<ActionResult>;

/** The runs of this page. */
export class RunStore {
  private readonly entries = new Map<string, RunEntry>();
  private readonly controllers = new Map<string, AbortController>();
  private readonly listeners = new Set<() => void>();

  /** The run under `key` (an idle one when there is none). */
  get(key: string): RunEntry {
    return this.entries.get(key) ?? EMPTY;
  }

  /** Calls `fn` on every change; returns an unsubscribe function. */
  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  private put(key: string, entry: RunEntry): void {
    this.entries.set(key, entry);
    for (const fn of this.listeners) fn();
  }

  private dispatch(key: string, event: RunEvent): void {
    const entry = this.get(key);
    const state = runReducer(entry.state, event);
    if (state !== entry.state) this.put(key, { ...entry, state });
  }

  /** Remembers the form's action and data (kept while the person is elsewhere). */
  setForm(key: string, action: string, formData: Record<string, unknown>): void {
    const entry = this.get(key);
    if (entry.action === action && entry.formData === formData) return;
    this.put(key, { ...entry, action, formData });
  }

  /**
   * Fills the form under `key` with `action` and `input` (the JSON payload of a past
   * run) when the runner shows it next; the output of an earlier run there is cleared.
   * Nothing changes while a run is going there.
   */
  prefill(key: string, action: string, input: string): void {
    if (this.isRunning(key)) return;
    const entry = this.get(key);
    this.put(key, { ...entry, state: runReducer(entry.state, { type: 'reset' }), prefill: { action, input } });
  }

  /** Sets the form under `key` and drops its prefill (the runner applied it). */
  applyPrefill(key: string, action: string, formData: Record<string, unknown>): void {
    const { prefill: _done, ...entry } = this.get(key);
    this.put(key, { ...entry, action, formData });
  }

  /** Whether the run under `key` is going. */
  isRunning(key: string): boolean {
    return isActive(this.get(key).state);
  }

  /** How many runs are going. */
  get running(): number {
    return [...this.entries.values()].filter((e) => isActive(e.state)).length;
  }

  /**
   * Starts a run under `key` (nothing when one is going there). Resolves when it ended,
   * however it ended; `onFinished` is called then.
   */
  async start(key: string, run: StartRun, onFinished?: () => void): Promise<void> {
    if (this.controllers.has(key)) return;
    const controller = new AbortController();
    this.controllers.set(key, controller);
    this.dispatch(key, { type: 'start' });
    try {
      const result = await run({
        signal: controller.signal,
        onChunk: (data) => this.dispatch(key, { type: 'chunk', data }),
      });
      this.dispatch(key, { type: 'end', chunks: result.chunks, elapsedMs: result.elapsedMs });
    } catch (err) {
      const { code, message } = describeError(err);
      if (controller.signal.aborted && code === 'cancelled') this.dispatch(key, { type: 'cancelled' });
      else this.dispatch(key, { type: 'error', code, message });
    } finally {
      this.controllers.delete(key);
      onFinished?.();
    }
  }

  /** Asks the run under `key` to stop. */
  cancel(key: string): void {
    const controller = this.controllers.get(key);
    if (!controller || controller.signal.aborted) return;
    this.dispatch(key, { type: 'cancel' });
    controller.abort();
  }

  /** Stops every run and forgets them all (signing out). */
  abortAll(): void {
    for (const controller of this.controllers.values()) controller.abort();
    this.controllers.clear();
    this.entries.clear();
    for (const fn of this.listeners) fn();
  }
}
