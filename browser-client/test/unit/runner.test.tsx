// @vitest-environment jsdom
/**
 * The mini-app runner: a form from the app's schema, validation errors shown, the run
 * dispatched with the form's data, output streamed as sanitised markdown, STREAM_END,
 * ERROR, and cancel by button and by Escape.
 */

import { act, cleanup, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MiniAppRunner, type RunFn } from '../../src/components/MiniAppRunner';
import { RemoteError, type ActionResult } from '../../src/tunnel/client';

// React's act() wants to know it runs in a test environment.
(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

afterEach(cleanup);

const actions = {
  write: {
    type: 'object',
    title: 'Write a paragraph',
    properties: {
      topic: { type: 'string', title: 'Topic', minLength: 3 },
      tone: { type: 'string', title: 'Tone', enum: ['plain', 'playful'], default: 'plain' },
    },
    required: ['topic'],
  },
  echo: {
    type: 'object',
    title: 'Echo',
    properties: { text: { type: 'string', title: 'Text' } },
    required: ['text'],
  },
} as const;
const uiSchemas = { write: { topic: { 'ui:placeholder': 'e.g. QUIC', 'ui:help': 'What to write about' } } };

/** A fake desktop: each call hands the test its chunk callback and promise controls. */
function fakeRun() {
  const calls: {
    action: string;
    payload: string;
    signal: AbortSignal;
    onChunk: (d: string) => void;
    resolve: (r: ActionResult) => void;
    reject: (e: unknown) => void;
  }[] = [];
  const run: RunFn = (action, payload, { signal, onChunk }) =>
    new Promise((resolve, reject) => calls.push({ action, payload, signal, onChunk, resolve, reject }));
  return { run, calls };
}

function setup(extra: Partial<Parameters<typeof MiniAppRunner>[0]> = {}) {
  const fake = fakeRun();
  const onFinished = vi.fn();
  render(
    <MiniAppRunner actions={actions as never} uiSchemas={uiSchemas} deviceName="desk" run={fake.run} onFinished={onFinished} {...extra} />,
  );
  return { ...fake, onFinished };
}

const status = () => document.getElementById('run-status')!.textContent;
const output = () => document.getElementById('output')!;

async function flush(): Promise<void> {
  await act(async () => {
    await new Promise((r) => setTimeout(r, 0));
  });
}

describe('MiniAppRunner', () => {
  it('renders the action’s schema as a labelled form, with the uiSchema’s hints', () => {
    setup();
    const topic = screen.getByLabelText(/^Topic/);
    expect(topic.tagName).toBe('INPUT');
    expect(topic.getAttribute('placeholder')).toBe('e.g. QUIC');
    expect(screen.getByText('What to write about')).toBeTruthy();
    const tone = screen.getByLabelText(/^Tone/) as HTMLSelectElement;
    expect(tone.selectedOptions[0]?.textContent).toBe('plain');
    // Several actions: a labelled chooser switches the form.
    const choice = screen.getByLabelText('Action') as HTMLSelectElement;
    fireEvent.change(choice, { target: { value: 'echo' } });
    expect(screen.getByLabelText(/^Text/)).toBeTruthy();
    expect(screen.queryByLabelText(/^Topic/)).toBeNull();
  });

  it('shows validation errors and does not run an invalid form', async () => {
    const { calls } = setup();
    fireEvent.click(screen.getByRole('button', { name: 'Run on desk' }));
    await flush();
    expect(calls).toHaveLength(0);
    // In words, not the validator's ("must have required property 'Topic'").
    expect(document.body.textContent).toMatch(/Topic is required/);
    expect(document.body.textContent).not.toMatch(/must have required property/);
    // The first invalid field gets the focus.
    expect(document.activeElement).toBe(screen.getByLabelText(/^Topic/));

    fireEvent.change(screen.getByLabelText(/^Topic/), { target: { value: 'ab' } });
    fireEvent.submit(screen.getByRole('button', { name: 'Run on desk' }).closest('form')!);
    await flush();
    expect(calls).toHaveLength(0);
    expect(document.body.textContent).toMatch(/Topic needs at least 3 characters/);
  });

  it('runs with the form data as payload, streams chunks as markdown and ends with the time', async () => {
    const { calls, onFinished } = setup();
    fireEvent.change(screen.getByLabelText(/^Topic/), { target: { value: 'QUIC' } });
    fireEvent.submit(screen.getByRole('button', { name: 'Run on desk' }).closest('form')!);
    await flush();
    expect(calls).toHaveLength(1);
    expect(calls[0]!.action).toBe('write');
    expect(JSON.parse(calls[0]!.payload)).toEqual({ topic: 'QUIC', tone: 'plain' });
    expect(status()).toBe('Running…');
    expect((screen.getByRole('button', { name: 'Run on desk' }) as HTMLButtonElement).disabled).toBe(true);
    expect((screen.getByRole('button', { name: 'Cancel' }) as HTMLButtonElement).disabled).toBe(false);
    expect(output().getAttribute('aria-busy')).toBe('true');

    act(() => calls[0]!.onChunk('# Result\n\nSome **bold** '));
    act(() => calls[0]!.onChunk('text <img src=x onerror=alert(1)>'));
    expect(output().querySelector('h1')?.textContent).toBe('Result');
    expect(output().querySelector('strong')?.textContent).toBe('bold');
    // The model's HTML is text, not an element.
    expect(output().querySelector('img')).toBeNull();
    expect(output().textContent).toContain('<img src=x onerror=alert(1)>');

    await act(async () => calls[0]!.resolve({ chunks: 2, elapsedMs: 1500 }));
    expect(status()).toBe('Done in 1.5 s.');
    expect(document.getElementById('run-status')!.dataset.chunks).toBe('2');
    expect(output().getAttribute('aria-busy')).toBe('false');
    expect(onFinished).toHaveBeenCalledTimes(1);
    // The status is a live region.
    expect(document.getElementById('run-status')!.getAttribute('role')).toBe('status');
  });

  it('shows an ERROR as a readable message and keeps the output so far', async () => {
    const { calls } = setup();
    fireEvent.change(screen.getByLabelText(/^Topic/), { target: { value: 'QUIC' } });
    fireEvent.submit(screen.getByRole('button', { name: 'Run on desk' }).closest('form')!);
    await flush();
    act(() => calls[0]!.onChunk('partial'));
    await act(async () => calls[0]!.reject(new RemoteError('provider_error', 'the provider answered HTTP 500')));
    expect(status()).toBe('The AI provider on your desktop answered with an error. Check its key and model on the desktop.');
    // The code and the original message are behind "Details".
    const details = document.querySelector('#run-error details')!;
    expect(details.querySelector('summary')!.textContent).toBe('Details');
    expect(details.textContent).toContain('provider_error');
    expect(details.textContent).toContain('the provider answered HTTP 500');
    expect(output().textContent).toContain('partial');
  });

  it('cancels with the button: the signal aborts and the run ends as cancelled', async () => {
    const { calls } = setup();
    fireEvent.change(screen.getByLabelText(/^Topic/), { target: { value: 'QUIC' } });
    fireEvent.submit(screen.getByRole('button', { name: 'Run on desk' }).closest('form')!);
    await flush();
    const call = calls[0]!;
    call.signal.addEventListener('abort', () => call.reject(new RemoteError('cancelled', 'cancelled by the browser')));
    fireEvent.click(screen.getByRole('button', { name: 'Cancel' }));
    expect(call.signal.aborted).toBe(true);
    await flush();
    expect(status()).toBe('Cancelled');
  });

  it('cancels with Escape while running, and Escape does nothing when idle', async () => {
    const { calls } = setup();
    fireEvent.keyDown(document, { key: 'Escape' });
    fireEvent.change(screen.getByLabelText(/^Topic/), { target: { value: 'QUIC' } });
    fireEvent.submit(screen.getByRole('button', { name: 'Run on desk' }).closest('form')!);
    await flush();
    const call = calls[0]!;
    call.signal.addEventListener('abort', () => call.reject(new DOMException('the action was cancelled', 'AbortError')));
    fireEvent.keyDown(document, { key: 'Escape' });
    expect(call.signal.aborted).toBe(true);
    await flush();
    expect(status()).toBe('Cancelled');
  });

  it('renders arrays, radios and ranges (the seo-writer example) with worded buttons', async () => {
    const seo = {
      write: {
        title: 'Write an article',
        type: 'object',
        required: ['topic'],
        properties: {
          topic: { type: 'string', title: 'Topic', minLength: 1 },
          keywords: { type: 'array', title: 'Keywords', items: { type: 'string', minLength: 1 }, maxItems: 10, default: [] },
          tone: { type: 'string', title: 'Tone', enum: ['neutral', 'friendly'], default: 'neutral' },
          words: { type: 'integer', title: 'Length in words', minimum: 200, maximum: 2000, default: 800 },
        },
      },
    };
    const ui = {
      write: { keywords: { 'ui:options': { orderable: false } }, tone: { 'ui:widget': 'radio' }, words: { 'ui:widget': 'range' } },
    };
    const { calls } = setup({ actions: seo as never, uiSchemas: ui });
    // The add button has words, not an empty Bootstrap glyph.
    fireEvent.click(screen.getByRole('button', { name: 'Add' }));
    await flush();
    const keyword = document.getElementById('root_keywords_0') as HTMLInputElement;
    fireEvent.change(keyword, { target: { value: 'espresso' } });
    expect(screen.getByRole('button', { name: 'Remove' })).toBeTruthy();
    fireEvent.click(screen.getByLabelText('friendly'));
    fireEvent.change(screen.getByLabelText(/^Topic/), { target: { value: 'coffee' } });
    fireEvent.submit(screen.getByRole('button', { name: 'Run on desk' }).closest('form')!);
    await flush();
    expect(JSON.parse(calls[0]!.payload)).toEqual({ topic: 'coffee', keywords: ['espresso'], tone: 'friendly', words: 800 });
  });

  it('does not run while blocked (device offline) and says why', async () => {
    const { calls } = setup({ blocked: 'desk is offline' });
    expect((screen.getByRole('button', { name: 'Run on desk' }) as HTMLButtonElement).disabled).toBe(true);
    expect(screen.getByText('desk is offline')).toBeTruthy();
    fireEvent.change(screen.getByLabelText(/^Topic/), { target: { value: 'QUIC' } });
    fireEvent.submit(screen.getByRole('button', { name: 'Run on desk' }).closest('form')!);
    await flush();
    expect(calls).toHaveLength(0);
  });

  it('free-form mode (an app not in the marketplace) sends the named action and checks the JSON', async () => {
    const { calls } = setup({ freeform: true });
    fireEvent.change(screen.getByLabelText(/^Action/), { target: { value: 'write' } });
    fireEvent.change(screen.getByLabelText(/^Input \(JSON\)/), { target: { value: '{"topic": ' } });
    fireEvent.submit(screen.getByRole('button', { name: 'Run on desk' }).closest('form')!);
    await flush();
    expect(calls).toHaveLength(0);
    expect(document.body.textContent).toMatch(/must be valid JSON/);
    fireEvent.change(screen.getByLabelText(/^Input \(JSON\)/), { target: { value: '{"topic": "QUIC"}' } });
    fireEvent.submit(screen.getByRole('button', { name: 'Run on desk' }).closest('form')!);
    await flush();
    expect(calls.map((c) => [c.action, c.payload])).toEqual([['write', '{"topic": "QUIC"}']]);
  });
});
