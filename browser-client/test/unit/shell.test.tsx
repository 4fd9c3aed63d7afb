// @vitest-environment jsdom
/**
 * The app shell's device list: "Loading devices…" until the list arrives, and "No
 * devices yet" as soon as the relay's STATUS_SNAPSHOT_END says the user has none, even
 * while the list request is still on its way.
 */

import { cleanup, render, screen, waitFor } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Shell } from '../../src/components/Shell';
import type { Api, Device } from '../../src/lib/api';
import { FakeTransport } from './fake-relay';

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

function setup() {
  const transport = new FakeTransport();
  // RelayClient.connect builds a WebTransport: hand it the fake.
  vi.stubGlobal(
    'WebTransport',
    class {
      constructor() {
        return transport;
      }
    },
  );
  let listDevices!: (list: Device[]) => void;
  const api = {
    user: { email: 'a@example.com' },
    subscribe: () => () => {},
    devices: () => new Promise<Device[]>((resolve) => (listDevices = resolve)),
    account: () => new Promise(() => {}),
    sessionInfo: async () => ({ webtransport_url: 'https://relay.test/wt', cert_sha256: [] }),
    accessToken: async () => 'jwt',
  } as unknown as Api;
  render(<Shell api={api} />);
  return { transport, listDevices: (list: Device[]) => listDevices(list) };
}

const devicesStatus = () => document.getElementById('devices-status')!.textContent;

describe('Shell device list', () => {
  it('shows "no devices" when the snapshot ends with 0 devices, before the list arrives', async () => {
    const { transport } = setup();
    expect(devicesStatus()).toBe('Loading devices…');
    await waitFor(() => expect(transport.streams[0]?.header()?.kind).toBe('Control'));
    transport.streams[0]!.send({ type: 'StatusSnapshotEnd', devices: 0 }, 0);
    await waitFor(() => expect(devicesStatus()).toBe('No devices yet.'));
  });

  it('keeps loading after a snapshot of some devices until the list (with names) arrives', async () => {
    const { transport, listDevices } = setup();
    await waitFor(() => expect(transport.streams[0]?.header()?.kind).toBe('Control'));
    const far = transport.streams[0]!;
    far.send({ type: 'DeviceStatus', online: true, nodeVersion: '0.1.0', apps: [] }, 0, 'dev-1');
    far.send({ type: 'StatusSnapshotEnd', devices: 1 }, 0);
    await new Promise((r) => setTimeout(r, 20));
    expect(devicesStatus()).toBe('Loading devices…');
    listDevices([{ id: 'dev-1', name: 'desk', online: false, node_version: '0.1.0', last_seen: null }]);
    await waitFor(() => expect(devicesStatus()).toBe('1 device, 1 online.'));
    expect(screen.getByRole('list', { name: 'Your devices' }).textContent).toBe('desk online');
  });
});
