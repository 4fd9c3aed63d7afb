/**
 * The TypeScript mux (src/tunnel/transport/mux.ts) against the Rust side's vectors
 * (tunnel/vectors/mux-vectors.json), and a session driven frame by frame by a scripted
 * relay: flow control both ways, ends, and closes.
 */

import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

import {
  type Frame,
  INITIAL_WINDOW,
  MAX_DATA,
  MuxCode,
  MuxFrameError,
  MuxSession,
  type SocketLike,
  decodeFrame,
  encodeFrame,
} from '../../src/tunnel/transport/mux';

const here = dirname(fileURLToPath(import.meta.url));
const vectors = JSON.parse(readFileSync(resolve(here, '../../../tunnel/vectors/mux-vectors.json'), 'utf8')) as {
  header_len: number;
  max_data: number;
  initial_window: number;
  valid: { name: string; frame: Record<string, unknown>; hex: string }[];
  invalid: { name: string; hex: string; error: string }[];
};

const fromHex = (hex: string) => new Uint8Array((hex.match(/../g) ?? []).map((b) => parseInt(b, 16)));
const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/** The vectors' JSON shape of a frame. */
function asJson(f: Frame): Record<string, unknown> {
  switch (f.type) {
    case 'data':
      return { type: 'data', id: f.id, data: toHex(f.data) };
    case 'ping':
    case 'pong':
      return { type: f.type, payload: toHex(f.payload) };
    default:
      return { ...f };
  }
}

function fromJson(j: Record<string, unknown>): Frame {
  const t = j.type as Frame['type'];
  if (t === 'data') return { type: 'data', id: j.id as number, data: fromHex(j.data as string) };
  if (t === 'ping' || t === 'pong') return { type: t, payload: fromHex(j.payload as string) };
  return j as unknown as Frame;
}

describe('mux frames against the Rust vectors', () => {
  it('agrees on the constants', () => {
    expect(vectors.header_len).toBe(9);
    expect(vectors.max_data).toBe(MAX_DATA);
    expect(vectors.initial_window).toBe(INITIAL_WINDOW);
  });
  for (const v of vectors.valid) {
    it(`decodes and encodes: ${v.name}`, () => {
      expect(asJson(decodeFrame(fromHex(v.hex)))).toEqual(v.frame);
      expect(toHex(encodeFrame(fromJson(v.frame)))).toBe(v.hex);
    });
  }
  for (const v of vectors.invalid) {
    it(`refuses: ${v.name}`, () => {
      let err: unknown;
      try {
        decodeFrame(fromHex(v.hex));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MuxFrameError);
      expect((err as MuxFrameError).kind).toBe(v.error);
    });
  }
  it('cuts a long GOAWAY reason at a character boundary', () => {
    const bytes = encodeFrame({ type: 'goaway', code: 1, reason: 'é'.repeat(200) });
    const f = decodeFrame(bytes);
    expect(f.type === 'goaway' && new TextEncoder().encode(f.reason).length).toBe(256);
  });
});

/** A WebSocket double: what the session sends is decoded into `sent`. */
class FakeSocket implements SocketLike {
  binaryType: BinaryType = 'blob';
  readyState = 1;
  bufferedAmount = 0;
  onopen: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  onclose: ((ev: CloseEvent) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  sent: Frame[] = [];
  closedWith: number | null = null;
  send(data: Uint8Array): void {
    this.sent.push(decodeFrame(data));
  }
  close(code?: number): void {
    this.closedWith = code ?? 1005;
    this.readyState = 3;
  }
  /** The relay sends a frame. */
  deliver(f: Frame | Uint8Array | string): void {
    const data = typeof f === 'string' ? f : f instanceof Uint8Array ? f.slice().buffer : encodeFrame(f).buffer;
    this.onmessage?.({ data } as MessageEvent);
  }
  take(): Frame[] {
    return this.sent.splice(0);
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('MuxSession', () => {
  it('opens odd ids and writes only as far as its credit', async () => {
    const socket = new FakeSocket();
    const session = new MuxSession(socket);
    const a = await session.createBidirectionalStream();
    const b = await session.createBidirectionalStream();
    expect(socket.take()).toEqual([
      { type: 'open', id: 1 },
      { type: 'open', id: 3 },
    ]);
    const writer = a.writable.getWriter();
    const big = new Uint8Array(INITIAL_WINDOW + 1000);
    let written = false;
    void writer.write(big).then(() => (written = true));
    await tick();
    const sent = socket.take();
    const dataBytes = sent.reduce((n, f) => n + (f.type === 'data' ? f.data.length : 0), 0);
    expect(dataBytes).toBe(INITIAL_WINDOW);
    expect(sent.every((f) => f.type !== 'data' || f.data.length <= MAX_DATA)).toBe(true);
    expect(written).toBe(false);
    // Another stream is not held back.
    const bw = b.writable.getWriter();
    await bw.write(new Uint8Array([1, 2, 3]));
    expect(socket.take()).toEqual([{ type: 'data', id: 3, data: new Uint8Array([1, 2, 3]) }]);
    // Credit lets the rest go.
    socket.deliver({ type: 'credit', id: 1, increment: 4096 });
    await tick();
    expect(written).toBe(true);
    const rest = socket.take();
    expect(rest).toHaveLength(1);
    expect(rest[0]?.type === 'data' && rest[0].data.length).toBe(1000);
    await writer.close();
    expect(socket.take()).toEqual([{ type: 'finish', id: 1 }]);
    session.close();
  });

  it('grants credit as the page reads, and ends at FINISH', async () => {
    const socket = new FakeSocket();
    const session = new MuxSession(socket);
    const s = await session.createBidirectionalStream();
    socket.take();
    const chunk = new Uint8Array(MAX_DATA).fill(7);
    for (let i = 0; i < 4; i++) socket.deliver({ type: 'data', id: 1, data: chunk });
    await tick();
    expect(socket.take()).toEqual([]); // nothing read yet: no credit
    const reader = s.readable.getReader();
    let total = 0;
    while (total < INITIAL_WINDOW / 2) {
      const { value } = await reader.read();
      total += value?.byteLength ?? 0;
    }
    expect(socket.take()).toEqual([{ type: 'credit', id: 1, increment: INITIAL_WINDOW / 2 }]);
    socket.deliver({ type: 'finish', id: 1 });
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      total += value.byteLength;
    }
    expect(total).toBe(4 * MAX_DATA);
    // After FINISH no more credit is granted.
    expect(socket.take().filter((f) => f.type === 'credit')).toEqual([]);
    session.close();
  });

  it('passes RESET to the reader with its code, STOP to the writer', async () => {
    const socket = new FakeSocket();
    const session = new MuxSession(socket);
    const s = await session.createBidirectionalStream();
    socket.deliver({ type: 'reset', id: 1, code: 1 });
    await expect(s.readable.getReader().read()).rejects.toMatchObject({ streamErrorCode: 1 });
    socket.deliver({ type: 'stop', id: 1, code: 0 });
    socket.take();
    await expect(s.writable.getWriter().write(new Uint8Array([1]))).rejects.toMatchObject({ streamErrorCode: 0 });
    session.close();
  });

  it('cancelling a read sends STOP, aborting a write sends RESET', async () => {
    const socket = new FakeSocket();
    const session = new MuxSession(socket);
    const s = await session.createBidirectionalStream();
    socket.take();
    await s.readable.cancel({ streamErrorCode: 5 });
    await s.writable.abort({ streamErrorCode: 6 });
    expect(socket.take()).toEqual([
      { type: 'stop', id: 1, code: 5 },
      { type: 'reset', id: 1, code: 6 },
    ]);
    session.close();
  });

  it('answers PING and closes on GOAWAY with its code and reason', async () => {
    const socket = new FakeSocket();
    const session = new MuxSession(socket);
    const s = await session.createBidirectionalStream();
    socket.take();
    socket.deliver({ type: 'ping', payload: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]) });
    expect(socket.take()).toEqual([{ type: 'pong', payload: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]) }]);
    socket.deliver({ type: 'goaway', code: 0x101, reason: 'unauthenticated: signed out; sign in again' });
    await expect(session.closed).resolves.toEqual({ closeCode: 0x101, reason: 'unauthenticated: signed out; sign in again' });
    await expect(s.readable.getReader().read()).rejects.toThrow(/session closed/);
    await expect(session.createBidirectionalStream()).rejects.toThrow(/session closed/);
  });

  it('a malformed frame from the relay closes with PROTOCOL_ERROR saying why', async () => {
    const socket = new FakeSocket();
    const session = new MuxSession(socket);
    socket.deliver(new Uint8Array([0x0a, 0, 0, 0, 1, 0, 0, 0, 0]));
    const info = await session.closed;
    expect(info.closeCode).toBe(MuxCode.PROTOCOL_ERROR);
    expect(info.reason).toMatch(/unknown mux frame type 0x0a/);
    expect(socket.take()).toEqual([{ type: 'goaway', code: MuxCode.PROTOCOL_ERROR, reason: info.reason }]);
    expect(socket.closedWith).toBe(1000);
  });

  it('a lost WebSocket rejects closed', async () => {
    const socket = new FakeSocket();
    const session = new MuxSession(socket);
    socket.onclose?.({ code: 1006, reason: '' } as CloseEvent);
    await expect(session.closed).rejects.toThrow(/connection lost/);
  });
});
