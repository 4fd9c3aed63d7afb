/**
 * The transport race (src/tunnel/transport/index.ts): WebTransport first, the WebSocket
 * after the head start or at once when WebTransport fails or is missing; what won is
 * remembered per relay; a session on the WebSocket moves new streams to WebTransport
 * once it is reachable.
 */

import { describe, expect, it } from 'vitest';

import type { TransportLike } from '../../src/tunnel/client';
import { MovingTransport, type RaceDeps, currentTransport, race, remembered } from '../../src/tunnel/transport';

/** A transport double that records what it was asked. */
function fake(name: string) {
  let closeIt!: (info: WebTransportCloseInfo) => void;
  const t = {
    name,
    streamCount: 0,
    closedWith: null as WebTransportCloseInfo | null,
    opened: 0,
    ready: Promise.resolve(undefined),
    closed: new Promise<WebTransportCloseInfo>((r) => (closeIt = r)),
    close(info?: WebTransportCloseInfo) {
      t.closedWith = info ?? {};
      closeIt({ closeCode: info?.closeCode ?? 0, reason: info?.reason ?? '' });
    },
    createBidirectionalStream() {
      t.opened++;
      return Promise.resolve({} as WebTransportBidirectionalStream);
    },
  };
  return t;
}

function memoryStorage() {
  const m = new Map<string, string>();
  return {
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    removeItem: (k: string) => void m.delete(k),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const after = <T>(ms: number, v: T) => sleep(ms).then(() => v);
const never = () => new Promise<never>(() => {});

function deps(over: Partial<RaceDeps>): RaceDeps & { log: string[] } {
  const log: string[] = [];
  return {
    webTransport: null,
    webSocket: () => Promise.reject(new Error('no')),
    storage: memoryStorage(),
    now: () => Date.now(),
    headStartMs: 40,
    retryMs: 1_000_000,
    ...over,
    log,
  };
}

const WT = 'https://relay.example:4433/wt';

describe('race', () => {
  it('WebTransport that answers within its head start wins alone', async () => {
    const log: string[] = [];
    const d = deps({
      webTransport: () => (log.push('wt'), after(5, fake('wt') as TransportLike)),
      webSocket: () => (log.push('ws'), after(1, fake('ws') as TransportLike)),
    });
    const won = await race(WT, [], 'ws://x', d);
    expect(won.kind).toBe('webtransport');
    await sleep(60);
    expect(log).toEqual(['wt']);
  });

  it('a black-holed WebTransport loses to the WebSocket after the head start, which is remembered', async () => {
    const log: string[] = [];
    const d = deps({
      webTransport: () => (log.push('wt'), never()),
      webSocket: () => (log.push('ws'), after(1, fake('ws') as TransportLike)),
    });
    const t0 = Date.now();
    const won = await race(WT, [], 'ws://x', d);
    expect(won.kind).toBe('websocket');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(35);
    expect(remembered(d, 'relay.example:4433')).toBe('websocket');
    // Next time the WebSocket starts at once.
    log.length = 0;
    const t1 = Date.now();
    const again = await race(WT, [], 'ws://x', d);
    expect(again.kind).toBe('websocket');
    expect(Date.now() - t1).toBeLessThan(30);
    expect(log).toEqual(['ws']);
  });

  it('a WebTransport that fails fast starts the WebSocket at once', async () => {
    const d = deps({
      headStartMs: 10_000,
      webTransport: () => Promise.reject(new Error('refused')),
      webSocket: () => after(1, fake('ws') as TransportLike),
    });
    const t0 = Date.now();
    expect((await race(WT, [], 'ws://x', d)).kind).toBe('websocket');
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('no WebTransport in the browser: the WebSocket only', async () => {
    const d = deps({ webSocket: () => after(1, fake('ws') as TransportLike) });
    expect((await race(WT, [], 'ws://x', d)).kind).toBe('websocket');
  });

  it('both failing rejects with both reasons', async () => {
    const d = deps({
      webTransport: () => Promise.reject(new Error('udp blocked')),
      webSocket: () => Promise.reject(new Error('tcp blocked')),
    });
    await expect(race(WT, [], 'ws://x', d)).rejects.toThrow(/udp blocked.*tcp blocked/);
  });

  it('a late loser is closed', async () => {
    const wt = fake('wt');
    const d = deps({
      webTransport: () => after(80, wt as TransportLike),
      webSocket: () => after(1, fake('ws') as TransportLike),
    });
    expect((await race(WT, [], 'ws://x', d)).kind).toBe('websocket');
    await sleep(120);
    expect(wt.closedWith).not.toBeNull();
  });

  it('an expired memory is forgotten', () => {
    const d = deps({});
    d.storage?.setItem('aisa.transport:relay.example:4433', JSON.stringify({ kind: 'websocket', until: Date.now() - 1 }));
    expect(remembered(d, 'relay.example:4433')).toBeNull();
  });
});

describe('MovingTransport', () => {
  it('moves new streams to WebTransport once reachable; the WebSocket goes when idle', async () => {
    const ws = fake('ws');
    const wt = fake('wt');
    let reachable = false;
    const d = deps({
      webTransport: () => (reachable ? Promise.resolve(wt as TransportLike) : Promise.reject(new Error('blocked'))),
    });
    const moving = new MovingTransport('websocket', ws as TransportLike, WT, [], d);
    expect(currentTransport.kind).toBe('websocket');
    await moving.createBidirectionalStream();
    expect(ws.opened).toBe(1);
    expect(await moving.tryWebTransport()).toBe(false);
    reachable = true;
    ws.streamCount = 1; // a stream still running on the WebSocket
    expect(await moving.tryWebTransport()).toBe(true);
    expect(moving.kind).toBe('webtransport');
    expect(currentTransport.kind).toBe('webtransport');
    await moving.createBidirectionalStream();
    expect(wt.opened).toBe(1);
    await sleep(1100);
    expect(ws.closedWith).toBeNull(); // its stream still runs
    ws.streamCount = 0;
    await sleep(1100);
    expect(ws.closedWith).toEqual({ closeCode: 0, reason: 'moved to WebTransport' });
    // The old WebSocket closing does not end the session; WebTransport closing does.
    let ended = false;
    void moving.closed.then(() => (ended = true));
    await sleep(5);
    expect(ended).toBe(false);
    wt.close({ closeCode: 0x101, reason: 'revoked' });
    await expect(moving.closed).resolves.toEqual({ closeCode: 0x101, reason: 'revoked' });
    expect(currentTransport.kind).toBeNull();
  });
});
