/**
 * RelaySession: reopens the relay session after it closes or fails to open, with backoff,
 * and re-subscribes to device status on every new session.
 */

import { afterEach, describe, expect, it, vi } from 'vitest';
import { RelayClient, TransportError } from '../../src/tunnel/client';
import { RelaySession, backoff, type SessionState } from '../../src/lib/session';
import { FakeTransport } from './fake-relay';

afterEach(() => {
  vi.useRealTimers();
});

/** Lets promise callbacks and stream work run (with fake timers installed). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await vi.advanceTimersByTimeAsync(0);
}

function setup(failFirst = 0) {
  vi.useFakeTimers();
  const transports: FakeTransport[] = [];
  const statuses: [string, boolean][] = [];
  const snapshots: number[] = [];
  const states: SessionState[] = [];
  let attempts = 0;
  const delays: number[] = [];
  const session = new RelaySession({
    sessionInfo: async () => ({ webtransport_url: 'https://relay.test/wt', cert_sha256: [] }),
    token: async () => 'jwt',
    connect: async (url) => {
      expect(url).toBe('https://relay.test/wt');
      attempts++;
      if (attempts <= failFirst) throw new TransportError('connection_failed', 'Opening handshake failed');
      const t = new FakeTransport();
      transports.push(t);
      return RelayClient.fromTransport(t);
    },
    onDeviceStatus: (id, online) => statuses.push([id, online]),
    onSnapshotEnd: (n) => snapshots.push(n),
    onState: (s) => states.push(s),
    backoff: (n) => {
      const d = 1000 * 2 ** n;
      delays.push(d);
      return d;
    },
  });
  return { session, transports, statuses, snapshots, states, delays, attempts: () => attempts };
}

describe('RelaySession', () => {
  it('opens a session and subscribes to device status', async () => {
    const { session, transports, statuses } = setup();
    session.start();
    await settle();
    expect(session.status).toEqual({ kind: 'connected' });
    const watch = transports[0]!.streams[0]!;
    expect(watch.header()).toEqual({ deviceId: '', kind: 'Control', token: 'jwt', e2e: null });
    watch.send({ type: 'DeviceStatus', online: true, nodeVersion: '0.1.0', apps: [] }, 0, 'dev-1');
    await settle();
    expect(statuses).toEqual([['dev-1', true]]);
    session.stop();
  });

  it('passes the end of the status snapshot on', async () => {
    const { session, transports, snapshots } = setup();
    session.start();
    await settle();
    transports[0]!.streams[0]!.send({ type: 'StatusSnapshotEnd', devices: 0 }, 0);
    await settle();
    expect(snapshots).toEqual([0]);
    session.stop();
  });

  it('reopens after the session is lost, with backoff, and re-subscribes', async () => {
    const { session, transports, statuses, delays } = setup();
    session.start();
    await settle();
    transports[0]!.lose(new Error('connection lost'));
    await settle();
    expect(session.status).toMatchObject({ kind: 'retrying', inMs: 1000 });
    expect(transports).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(transports).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    expect(transports).toHaveLength(2);
    expect(session.status).toEqual({ kind: 'connected' });
    // The new session has its own device-status stream, and what it reports arrives.
    const watch = transports[1]!.streams[0]!;
    expect(watch.header()?.kind).toBe('Control');
    watch.send({ type: 'DeviceStatus', online: false, nodeVersion: '', apps: [] }, 0, 'dev-1');
    await settle();
    expect(statuses).toEqual([['dev-1', false]]);
    expect(delays).toEqual([1000]);
    session.stop();
  });

  it('backs off longer after each failed attempt, and resets once connected', async () => {
    const { session, transports, delays, attempts } = setup(3);
    session.start();
    await settle();
    expect(attempts()).toBe(1);
    await vi.advanceTimersByTimeAsync(1000);
    await settle();
    expect(attempts()).toBe(2);
    await vi.advanceTimersByTimeAsync(2000);
    await settle();
    expect(attempts()).toBe(3);
    await vi.advanceTimersByTimeAsync(4000);
    await settle();
    expect(attempts()).toBe(4);
    expect(transports).toHaveLength(1);
    expect(delays).toEqual([1000, 2000, 4000]);
    // A clean close after success starts from the shortest delay again.
    transports[0]!.close({ closeCode: 0, reason: 'relay restarting' });
    await settle();
    expect(session.status).toEqual({ kind: 'retrying', reason: 'closed: relay restarting', inMs: 1000 });
    session.stop();
  });

  it('re-subscribes when the relay finishes the device-status stream', async () => {
    const { session, transports } = setup();
    session.start();
    await settle();
    transports[0]!.streams[0]!.finish();
    await settle();
    await vi.advanceTimersByTimeAsync(1000);
    await settle();
    expect(transports[0]!.streams).toHaveLength(2);
    expect(transports[0]!.streams[1]!.header()?.kind).toBe('Control');
    session.stop();
  });

  it('stops reconnecting once stopped', async () => {
    const { session, transports } = setup();
    session.start();
    await settle();
    session.stop();
    await settle();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(transports).toHaveLength(1);
    expect(session.status).toEqual({ kind: 'stopped' });
    await expect(session.client()).rejects.toThrow(/not signed in/);
  });

  it('client() connects at once when a retry is scheduled', async () => {
    const { session, transports } = setup(1);
    session.start();
    await settle();
    expect(session.status.kind).toBe('retrying');
    const client = await session.client();
    expect(transports).toHaveLength(1);
    expect(client.isClosed).toBe(false);
    session.stop();
  });
});

describe('backoff', () => {
  it('doubles from 1 s to at most 30 s, within ±20 %', () => {
    expect(backoff(0, () => 0.5)).toBe(1000);
    expect(backoff(3, () => 0.5)).toBe(8000);
    expect(backoff(10, () => 0.5)).toBe(30_000);
    expect(backoff(0, () => 0)).toBe(800);
    expect(backoff(0, () => 1)).toBe(1200);
  });
});
