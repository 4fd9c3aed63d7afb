// @vitest-environment jsdom
/**
 * The run history in the browser: the three requests over RelayClient.request against a
 * fake relay, the Markdown a run downloads as, the input given back to the runner, the
 * runner's prefill, and the copy buttons put on rendered code blocks.
 */

import { describe, expect, it } from 'vitest';
import {
  deleteRuns,
  getRun,
  inputAsFormData,
  listRuns,
  markdownFileName,
  runToMarkdown,
  statusText,
  type RunRecord,
} from '../../src/lib/history';
import { decorateCodeBlocks, renderMarkdown } from '../../src/lib/markdown';
import { RunStore } from '../../src/lib/runs';
import { RemoteError, TransportError } from '../../src/tunnel/client';
import { fakeClient, until } from './fake-relay';

const RUN: RunRecord = {
  id: 1_795_000_000_123,
  appId: 'hello-ai',
  appName: 'Hello AI',
  action: 'write',
  input: '{"topic":"QUIC"}',
  output: '# QUIC\n\n```rust\nfn main() {}\n```\n',
  startedMs: Date.UTC(2026, 10, 29, 18, 30, 5),
  durationMs: 1234,
  status: 'done',
  errorCode: '',
  errorMessage: '',
  capped: false,
  preview: false,
};

describe('history requests', () => {
  it('lists on a Control stream and returns the page', async () => {
    const { transport, client } = fakeClient();
    const answer = listRuns({ client, deviceId: 'dev-1', token: 'jwt' }, 'quic', 20, 10);
    await until(() => transport.streams[0]?.frames.length === 2, 'header + HISTORY_LIST');
    const far = transport.streams[0]!;
    expect(far.header()).toMatchObject({ deviceId: 'dev-1', kind: 'Control' });
    expect(far.envelopes().map((e) => e.body)).toEqual([{ type: 'HistoryList', query: 'quic', offset: 20, limit: 10 }]);
    far.send({ type: 'HistoryPage', total: 21, runs: [{ ...RUN, preview: true }] });
    far.finish();
    await expect(answer).resolves.toEqual({ total: 21, runs: [{ ...RUN, preview: true }] });
  });

  it('gets one, deletes one or all, and reports unknown_run and wrong answers', async () => {
    const a = fakeClient();
    const got = getRun({ client: a.client, deviceId: 'd', token: 't' }, RUN.id);
    await until(() => a.transport.streams[0]?.frames.length === 2);
    expect(a.transport.streams[0]!.envelopes()[0]!.body).toEqual({ type: 'HistoryGet', runId: RUN.id });
    a.transport.streams[0]!.send({ type: 'HistoryRun', run: RUN });
    a.transport.streams[0]!.finish();
    await expect(got).resolves.toEqual(RUN);

    const b = fakeClient();
    const all = deleteRuns({ client: b.client, deviceId: 'd', token: 't' }, null);
    await until(() => b.transport.streams[0]?.frames.length === 2);
    expect(b.transport.streams[0]!.envelopes()[0]!.body).toEqual({ type: 'HistoryDelete', runId: null });
    b.transport.streams[0]!.send({ type: 'HistoryDeleted', count: 3 });
    b.transport.streams[0]!.finish();
    await expect(all).resolves.toBe(3);

    const c = fakeClient();
    const gone = getRun({ client: c.client, deviceId: 'd', token: 't' }, 5);
    await until(() => c.transport.streams.length === 1);
    c.transport.streams[0]!.send({ type: 'Error', code: 'unknown_run', message: 'no run 5' });
    await expect(gone).rejects.toSatisfy((e) => e instanceof RemoteError && e.code === 'unknown_run');

    const d = fakeClient();
    const wrong = deleteRuns({ client: d.client, deviceId: 'd', token: 't' }, 5);
    await until(() => d.transport.streams.length === 1);
    d.transport.streams[0]!.send({ type: 'HistoryPage', total: 0, runs: [] });
    await expect(wrong).rejects.toSatisfy((e) => e instanceof TransportError && e.code === 'unexpected_message');
  });
});

describe('a run as Markdown', () => {
  it('says what ran, when and how, with the input fenced and the output as it came', () => {
    const md = runToMarkdown(RUN, 'my desk');
    expect(md).toContain('# Hello AI: write\n');
    expect(md).toContain('- Desktop: my desk\n');
    expect(md).toContain('- Started: 2026-11-29 18:30:05 UTC\n');
    expect(md).toContain('- Took: 1.2 s\n');
    expect(md).toContain('- Status: Done\n');
    expect(md).toContain('## Input\n\n```json\n{\n  "topic": "QUIC"\n}\n```\n');
    expect(md).toContain('## Output\n\n# QUIC\n\n```rust\nfn main() {}\n```\n');
    expect(markdownFileName(RUN)).toBe('hello-ai-write-2026-11-29-1830.md');
  });

  it('fences an input with backticks in it so it cannot close the fence', () => {
    const md = runToMarkdown({ ...RUN, input: '{"code":"```x```"}' }, 'd');
    expect(md).toContain('````json\n');
  });

  it('names the error of a failed run', () => {
    const failed = { ...RUN, status: 'failed', errorCode: 'provider_error', errorMessage: 'HTTP 429' };
    expect(statusText(failed)).toBe('Failed (provider_error)');
    expect(runToMarkdown(failed, 'd')).toContain('- Status: Failed (provider_error)\n- Error: HTTP 429\n');
  });
});

describe('running again', () => {
  it('gives the input back as form data, or nothing when it is not a JSON object', () => {
    expect(inputAsFormData('{"topic":"x","n":2}')).toEqual({ topic: 'x', n: 2 });
    expect(inputAsFormData('[1]')).toEqual({});
    expect(inputAsFormData('not json')).toEqual({});
  });

  it('prefills the runner once, and never over a run that is going', () => {
    const store = new RunStore();
    store.prefill('d/a', 'write', '{"topic":"x"}');
    expect(store.get('d/a').prefill).toEqual({ action: 'write', input: '{"topic":"x"}' });
    store.applyPrefill('d/a', 'write', { topic: 'x' });
    expect(store.get('d/a')).toMatchObject({ action: 'write', formData: { topic: 'x' } });
    expect(store.get('d/a').prefill).toBeUndefined();

    let finish: () => void = () => {};
    void store.start('d/b', () => new Promise((resolve) => (finish = () => resolve({ chunks: 0, elapsedMs: 1 }))));
    store.prefill('d/b', 'write', '{}');
    expect(store.get('d/b').prefill).toBeUndefined();
    finish();
  });
});

describe('copy buttons on code blocks', () => {
  it('puts one button on each code block, once', () => {
    const div = document.createElement('div');
    div.innerHTML = renderMarkdown('text\n\n```\na\n```\n\nmore\n\n```js\nb()\n```');
    decorateCodeBlocks(div);
    decorateCodeBlocks(div);
    const buttons = div.querySelectorAll('button.copy-code');
    expect(buttons.length).toBe(2);
    expect([...div.querySelectorAll('.code-block pre')].map((p) => p.textContent)).toEqual(['a\n', 'b()\n']);
    // The renderer itself still makes no buttons (the sanitiser's allow-list is unchanged).
    expect(renderMarkdown('<button>x</button>')).not.toContain('<button');
  });
});
