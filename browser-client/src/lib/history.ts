/**
 * A desktop's run history, as the desktop keeps it (docs/protocol.md, "History"): the
 * requests (HISTORY_LIST, HISTORY_GET, HISTORY_DELETE, each on its own Control stream,
 * sealed end to end for a paired device) and what the History screen makes of a run: a
 * Markdown document to download, the input pretty-printed, the status in words.
 *
 * The relay keeps no history; nothing here is stored in the browser either.
 */

import type { Body, RunRecord } from '../tunnel/codec';
import { RelayClient, TransportError, type E2eKeys } from '../tunnel/client';
import { formatMs } from './run';

export type { RunRecord } from '../tunnel/codec';

/** How many runs one page of the list holds. */
export const PAGE_SIZE = 20;

/** Where a history request goes. */
export interface HistoryTarget {
  client: RelayClient;
  deviceId: string;
  token: string;
  /** The keys of a paired device: the request and its answer are sealed. */
  e2e?: E2eKeys | null;
  signal?: AbortSignal;
}

/** Sends one history request and returns its one answer of type `want`. */
async function ask<T extends Body['type']>(
  target: HistoryTarget,
  body: Body,
  want: T,
): Promise<Extract<Body, { type: T }>> {
  let answer: Body | null = null;
  for await (const env of target.client.request({
    deviceId: target.deviceId,
    token: target.token,
    body,
    ...(target.signal ? { signal: target.signal } : {}),
    ...(target.e2e ? { e2e: target.e2e } : {}),
  })) {
    if (env.body.type !== want || answer) {
      throw new TransportError('unexpected_message', `unexpected ${env.body.type} answer to ${body.type}`);
    }
    answer = env.body;
  }
  if (!answer) throw new TransportError('stream_ended', `the device finished the stream without answering ${body.type}`);
  return answer as Extract<Body, { type: T }>;
}

/** One page of runs: how many match `query` in all, and these (newest first, shortened). */
export async function listRuns(
  target: HistoryTarget,
  query: string,
  offset: number,
  limit = PAGE_SIZE,
): Promise<{ total: number; runs: RunRecord[] }> {
  const page = await ask(target, { type: 'HistoryList', query, offset, limit }, 'HistoryPage');
  return { total: page.total, runs: page.runs };
}

/** One run in full. Rejects with a RemoteError `unknown_run` when it is gone. */
export async function getRun(target: HistoryTarget, runId: number): Promise<RunRecord> {
  return (await ask(target, { type: 'HistoryGet', runId }, 'HistoryRun')).run;
}

/** Deletes one run (`runId`) or all of them (null); resolves with how many went. */
export async function deleteRuns(target: HistoryTarget, runId: number | null): Promise<number> {
  return (await ask(target, { type: 'HistoryDelete', runId }, 'HistoryDeleted')).count;
}

/** "Done", "Failed (provider_error)", "Cancelled". */
export function statusText(run: Pick<RunRecord, 'status' | 'errorCode'>): string {
  switch (run.status) {
    case 'done':
      return 'Done';
    case 'cancelled':
      return 'Cancelled';
    case 'failed':
      return run.errorCode ? `Failed (${run.errorCode})` : 'Failed';
    default:
      return run.status;
  }
}

/** The input as a person reads it: JSON indented, anything else as it came. */
export function prettyInput(input: string): string {
  try {
    return JSON.stringify(JSON.parse(input), null, 2);
  } catch {
    return input;
  }
}

/** The input as form data for running again (`{}` when it is not a JSON object). */
export function inputAsFormData(input: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(input);
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** A fence longer than any run of backticks in `text`, so the text cannot close it. */
function fenceFor(text: string): string {
  const longest = Math.max(0, ...[...text.matchAll(/`+/g)].map((m) => m[0].length));
  return '`'.repeat(Math.max(3, longest + 1));
}

/** The run as a Markdown document: what ran, when, how it ended, the input, the output. */
export function runToMarkdown(run: RunRecord, deviceName: string): string {
  const started = new Date(run.startedMs).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const input = prettyInput(run.input);
  const inputFence = fenceFor(input);
  const lines = [
    `# ${run.appName || run.appId}: ${run.action}`,
    '',
    `- App: ${run.appName || run.appId} (\`${run.appId}\`)`,
    `- Action: ${run.action}`,
    `- Desktop: ${deviceName}`,
    `- Started: ${started}`,
    `- Took: ${formatMs(run.durationMs)}`,
    `- Status: ${statusText(run)}`,
  ];
  if (run.errorMessage) lines.push(`- Error: ${run.errorMessage}`);
  if (run.capped) lines.push('- Note: the desktop kept only the beginning of the input or output.');
  lines.push('', '## Input', '', `${inputFence}json`, input, inputFence, '', '## Output', '', run.output, '');
  return lines.join('\n');
}

/** A file name for the run's Markdown: `hello-ai-write-2026-11-29-1830.md`. */
export function markdownFileName(run: RunRecord): string {
  const d = new Date(run.startedMs).toISOString();
  const stamp = `${d.slice(0, 10)}-${d.slice(11, 13)}${d.slice(14, 16)}`;
  const safe = (s: string): string => s.replace(/[^a-zA-Z0-9_-]+/g, '-').replace(/^-+|-+$/g, '') || 'run';
  return `${safe(run.appId)}-${safe(run.action)}-${stamp}.md`;
}

/** Offers `text` as a file download named `name` (Markdown). */
export function downloadText(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/markdown;charset=utf-8' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.style.display = 'none';
  document.body.append(a);
  a.click();
  a.remove();
  // Some browsers read the URL after the click returns.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
