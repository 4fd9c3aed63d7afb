// @vitest-environment jsdom
/**
 * The marketplace app detail: versions, rating and permissions in plain words, and the
 * install request over the tunnel — "waiting for approval on your desktop" until the
 * desktop answers installed, or denied.
 */

import { cleanup, fireEvent, render, screen, waitFor } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { AppDetail } from '../../src/components/AppDetail';
import { AppContext, type AppContextValue } from '../../src/components/context';
import type { Api, Device, MarketAppDetail } from '../../src/lib/api';
import type { RelaySession } from '../../src/lib/session';
import { fakeClient, type FarEnd } from './fake-relay';
import { RunStore } from '../../src/lib/runs';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
afterEach(cleanup);

const detail: MarketAppDetail = {
  id: 'seo-writer',
  name: 'SEO Writer',
  description: 'Writes articles that rank.',
  category: 'writing',
  author: { name: 'Ada' },
  latest_version: '1.2.0',
  rating: { average: 4.5, count: 2 },
  installs: 17,
  versions: [
    { version: '1.2.0', published_at: '2026-11-20T10:00:00Z', yanked: false, sha256: 'ab', size: 2048, runtime: '>=0.1.0, <0.2.0' },
    { version: '1.1.0', published_at: '2026-11-01T10:00:00Z', yanked: true, sha256: 'cd', size: 1024, runtime: '>=0.1.0, <0.2.0' },
  ],
  permissions: { ai: true, network: ['api.example.com'] },
  action_schema: { write: { type: 'object' } },
  ui_schema: {},
};

const desk: Device = { id: 'dev-1', name: 'desk', online: true, node_version: '0.1.0', last_seen: null };

function setup(device: Device = desk) {
  const { transport, client } = fakeClient();
  const api = {
    marketApp: async () => detail,
    accessToken: async () => 'jwt',
  } as unknown as Api;
  const session = { client: async () => client } as unknown as RelaySession;
  const value: AppContextValue = {
    api,
    session,
    devices: [device],
    devicesLoading: false,
    devicesError: '',
    device,
    selectDevice: () => {},
    reloadDevices: () => {},
    account: null,
    reloadAccount: () => {},
    runs: new RunStore(),
    appNames: {},
  };
  render(
    <AppContext.Provider value={value}>
      <AppDetail appId="seo-writer" />
    </AppContext.Provider>,
  );
  return { transport };
}

const installStatus = () => document.getElementById('install-status')!.textContent;

async function requestInstall(transport: ReturnType<typeof fakeClient>['transport']): Promise<FarEnd> {
  await screen.findByRole('heading', { name: 'SEO Writer' });
  fireEvent.click(screen.getByRole('button', { name: 'Install on desk' }));
  await waitFor(() => expect(transport.streams[0]?.frames.length).toBe(2));
  return transport.streams[0]!;
}

describe('AppDetail', () => {
  it('shows versions, rating and the permissions in plain words', async () => {
    setup();
    await screen.findByRole('heading', { name: 'SEO Writer' });
    expect(document.getElementById('app-rating')!.textContent).toBe('4.5 ★ (2 ratings)');
    const perms = Array.from(document.querySelectorAll('#permissions li')).map((li) => li.textContent);
    expect(perms).toEqual([
      'Use the AI model on your desktop, with your AI key (the key itself stays on the desktop).',
      'Connect to the internet, only to “api.example.com”.',
    ]);
    const rows = Array.from(document.querySelectorAll('table.versions tbody tr')).map((r) => r.textContent);
    expect(rows[0]).toMatch(/^1\.2\.0.*2\.0 KiB.*latest$/);
    expect(rows[1]).toMatch(/^1\.1\.0.*withdrawn$/);
  });

  it('sends INSTALL_APP and shows waiting for approval, download progress, then installed', async () => {
    const { transport } = setup();
    const far = await requestInstall(transport);
    expect(far.header()).toMatchObject({ deviceId: 'dev-1', kind: 'Control', token: 'jwt' });
    expect(far.envelopes()[0]!.body).toEqual({ type: 'InstallApp', appId: 'seo-writer', version: '1.2.0' });
    expect(installStatus()).toBe('Sending the install request to desk…');
    expect((screen.getByRole('button', { name: 'Install on desk' }) as HTMLButtonElement).disabled).toBe(true);

    far.send({ type: 'StreamChunk', seq: 0, data: '{"state":"pending_approval"}' });
    await waitFor(() => expect(installStatus()).toMatch(/Waiting/));
    expect(installStatus()).toMatch(/^Waiting for approval on your desktop \(desk\)/);
    expect(document.getElementById('install-status')!.getAttribute('role')).toBe('status');

    far.send({ type: 'StreamChunk', seq: 1, data: '{"state":"downloading","percent":50}' });
    await waitFor(() => expect(installStatus()).toMatch(/Downloading/));
    expect(installStatus()).toBe('Downloading… 50 %');
    expect(screen.getByLabelText('Download progress').getAttribute('value')).toBe('50');

    far.send({ type: 'StreamChunk', seq: 2, data: '{"state":"installed","version":"1.2.0"}' });
    far.send({ type: 'StreamEnd', chunks: 3, elapsedMs: 4000 });
    far.finish();
    await waitFor(() => expect(installStatus()).toMatch(/on desk\.$/));
    expect(installStatus()).toBe('Installed version 1.2.0 on desk.');
    expect(screen.getByRole('link', { name: 'Open SEO Writer' }).getAttribute('href')).toBe('#/run/seo-writer');
  });

  it('says so when the install is denied on the desktop', async () => {
    const { transport } = setup();
    const far = await requestInstall(transport);
    far.send({ type: 'StreamChunk', seq: 0, data: '{"state":"pending_approval"}' });
    far.send({ type: 'Error', code: 'denied', message: '' });
    far.finish();
    await waitFor(() => expect(installStatus()).toMatch(/denied/));
    expect(installStatus()).toBe('The install was denied on desk.');
    expect((screen.getByRole('button', { name: 'Install on desk' }) as HTMLButtonElement).disabled).toBe(false);
  });

  it('reports other failures with their code, and cannot install on an offline device', async () => {
    const { transport } = setup();
    const far = await requestInstall(transport);
    far.send({ type: 'Error', code: 'install_failed', message: 'checksum mismatch' });
    await waitFor(() => expect(installStatus()).toMatch(/failed/));
    expect(installStatus()).toBe('The install failed [install_failed]: checksum mismatch');
    cleanup();

    setup({ ...desk, online: false });
    await screen.findByRole('heading', { name: 'SEO Writer' });
    expect((screen.getByRole('button', { name: 'Install on desk' }) as HTMLButtonElement).disabled).toBe(true);
    expect(screen.getByText(/desk is offline/)).toBeTruthy();
  });
});
