// @vitest-environment jsdom
/**
 * Protocol 1.2 in the web app's pieces: how a device's AI provider reads on the Devices
 * page, and the runner's model choice (offered only with several models; the chosen
 * one, not the default, travels with the run).
 */

import { act, cleanup, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { providerText } from '../../src/components/Devices';
import { MiniAppRunner, type RunFn } from '../../src/components/MiniAppRunner';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

afterEach(cleanup);

const actions = {
  write: { type: 'object', title: 'Write', properties: { topic: { type: 'string', title: 'Topic' } } },
} as const;

function setup(models?: string[]) {
  const calls: { model: string | undefined }[] = [];
  const run: RunFn = (_action, _payload, { model }) => {
    calls.push({ model });
    return Promise.resolve({ chunks: 0, elapsedMs: 1 });
  };
  render(<MiniAppRunner actions={actions as never} deviceName="desk" run={run} {...(models ? { models } : {})} />);
  return calls;
}

async function submit(): Promise<void> {
  fireEvent.submit(screen.getByRole('button', { name: 'Run on desk' }).closest('form')!);
  await act(async () => {
    await new Promise((r) => setTimeout(r, 0));
  });
}

describe('devices and models', () => {
  it('names the provider and its models, the default first, and a missing key', () => {
    expect(providerText({ name: 'openai', models: ['small', 'large'], configured: true })).toBe(
      'openai: small (default), large',
    );
    expect(providerText({ name: 'local', models: ['llama3.2'], configured: true })).toBe('local: llama3.2');
    expect(providerText({ name: 'anthropic', models: ['m'], configured: false })).toMatch(
      /^anthropic: m \(no API key set on the desktop yet/,
    );
  });

  it('offers no choice for one model and sends none', async () => {
    const calls = setup(['only']);
    expect(screen.queryByLabelText('Model')).toBeNull();
    await submit();
    expect(calls).toEqual([{ model: undefined }]);
  });

  it('offers the models and sends the chosen one, not the default', async () => {
    const calls = setup(['small', 'large']);
    const choice = screen.getByLabelText('Model') as HTMLSelectElement;
    expect([...choice.options].map((o) => o.textContent)).toEqual(['small (default)', 'large']);
    await submit();
    fireEvent.change(choice, { target: { value: 'large' } });
    await submit();
    fireEvent.change(choice, { target: { value: 'small' } });
    await submit();
    expect(calls).toEqual([{ model: undefined }, { model: 'large' }, { model: undefined }]);
  });
});
