/** RelayClient against an in-memory stand-in for WebTransport. */

import { afterEach, describe, expect, it, vi } from 'vitest';

import {
  CANCEL_GRACE_MS,
  RelayClient,
  RemoteError,
  TransportError,
  hashFromHex,
  type SessionClosed,
} from '../../src/tunnel/client';
import {
  decodeOpenHeader,
  encodeEnvelope,
  encodeFrame,
} from '../../src/tunnel/codec';
import { FakeTransport, fakeClient, until } from './fake-relay';

const setup = fakeClient;

const request = { deviceId: 'dev-1', token: 'jwt', appId: 'hello-ai', action: 'write', payload: '{"topic":"cats"}' };

afterEach(() => {
  vi.useRealTimers();
});

describe('RelayClient.runAction', () => {
  it('sends the header and EXECUTE_ACTION, streams chunks and resolves on STREAM_END', async () => {
    const { transport, client } = setup();
    const chunks: [string, number][] = [];
    const done = client.runAction({ ...request, requestId: 7, onChunk: (d, s) => chunks.push([d, s]) });

    await until(() => transport.streams[0]?.frames.length === 2, 'header + execute');
    const far = transport.streams[0]!;
    expect(decodeOpenHeader(far.frames[0]!)).toEqual({ deviceId: 'dev-1', kind: 'Action', token: 'jwt', e2e: null });
    expect(far.envelopes()).toEqual([
      { requestId: 7, deviceId: 'dev-1', body: { type: 'ExecuteAction', appId: 'hello-ai', action: 'write', payload: '{"topic":"cats"}' } },
    ]);
    expect(far.writeClosed).toBe(false); // the write side stays open while running

    far.send({ type: 'StreamChunk', seq: 0, data: 'Hello, ' });
    // One chunk split over two transport reads.
    const second = encodeFrame(encodeEnvelope({ requestId: 7, deviceId: '', body: { type: 'StreamChunk', seq: 1, data: '<b>cats</b>' } }));
    far.sendRaw(second.subarray(0, 3));
    far.sendRaw(second.subarray(3));
    far.send({ type: 'StreamEnd', chunks: 2, elapsedMs: 42 });
    far.finish();

    await expect(done).resolves.toEqual({ chunks: 2, elapsedMs: 42 });
    expect(chunks).toEqual([
      ['Hello, ', 0],
      ['<b>cats</b>', 1],
    ]);
    await until(() => far.writeClosed, 'write side closed');
  });

  it('picks increasing request ids when none is given', async () => {
    const { transport, client } = setup();
    void client.runAction(request).catch(() => {});
    void client.runAction(request).catch(() => {});
    await until(() => transport.streams.length === 2 && transport.streams.every((s) => s.frames.length === 2));
    const ids = transport.streams.map((s) => s.envelopes()[0]!.requestId);
    expect(ids[1]).toBe(ids[0]! + 1);
  });

  it('rejects with a RemoteError for an ERROR envelope', async () => {
    const { transport, client } = setup();
    const done = client.runAction(request);
    await until(() => transport.streams.length === 1);
    const far = transport.streams[0]!;
    far.send({ type: 'Error', code: 'device_offline', message: 'the device is offline' });
    far.finish();
    const err = await done.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toMatchObject({ code: 'device_offline', message: 'the device is offline' });
  });

  it('rejects when the stream ends before STREAM_END', async () => {
    const { transport, client } = setup();
    const done = client.runAction(request);
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.send({ type: 'StreamChunk', seq: 0, data: 'x' });
    transport.streams[0]!.finish();
    const err = await done.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportError);
    expect(err).toMatchObject({ code: 'stream_ended', message: expect.stringContaining('stream ended before the action finished') });
  });

  it('rejects when the stream ends mid-frame', async () => {
    const { transport, client } = setup();
    const done = client.runAction(request);
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.sendRaw(Uint8Array.of(0, 0, 0, 9, 1));
    transport.streams[0]!.finish();
    await expect(done).rejects.toMatchObject({ code: 'malformed_frame', message: expect.stringContaining('truncated') });
  });

  it('rejects when the stream is reset', async () => {
    const { transport, client } = setup();
    const done = client.runAction(request);
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.resetStream(3);
    await expect(done).rejects.toMatchObject({ code: 'stream_reset', message: expect.stringContaining('reset') });
  });

  it('rejects and resets the stream on a malformed envelope', async () => {
    const { transport, client } = setup();
    const done = client.runAction(request);
    await until(() => transport.streams.length === 1);
    const far = transport.streams[0]!;
    far.sendRaw(encodeFrame(Uint8Array.of(1, 0, 99)));
    await expect(done).rejects.toMatchObject({
      code: 'malformed_frame',
      message: 'malformed envelope: unknown message type 99',
    });
    await until(() => far.readCancelled || far.writeAborted, 'stream reset');
  });

  it('on abort sends CANCEL, closes the write side and reports the desktop\'s ERROR cancelled', async () => {
    const { transport, client } = setup();
    const controller = new AbortController();
    const seen: string[] = [];
    const done = client.runAction({ ...request, requestId: 5, signal: controller.signal, onChunk: (d) => seen.push(d) });
    await until(() => transport.streams[0]?.frames.length === 2);
    const far = transport.streams[0]!;
    far.send({ type: 'StreamChunk', seq: 0, data: 'a' }, 5);
    await until(() => seen.length === 1);

    controller.abort();
    await until(() => far.writeClosed, 'write side closed after cancel');
    expect(far.envelopes().map((e) => e.body)).toEqual([
      expect.objectContaining({ type: 'ExecuteAction' }),
      { type: 'Cancel' },
    ]);
    expect(far.envelopes()[1]).toMatchObject({ requestId: 5, deviceId: 'dev-1' });

    far.send({ type: 'StreamChunk', seq: 1, data: 'late' }, 5); // not shown after cancel
    far.send({ type: 'Error', code: 'cancelled', message: 'the action was cancelled' }, 5);
    far.finish();
    await expect(done).rejects.toMatchObject({ name: 'RemoteError', code: 'cancelled' });
    expect(seen).toEqual(['a']);
  });

  it('on abort rejects with an AbortError when the stream just ends', async () => {
    const { transport, client } = setup();
    const controller = new AbortController();
    const done = client.runAction({ ...request, signal: controller.signal });
    await until(() => transport.streams[0]?.frames.length === 2);
    controller.abort();
    await until(() => transport.streams[0]!.writeClosed);
    transport.streams[0]!.finish();
    await expect(done).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('on abort rejects with an AbortError when nobody answers within the grace period', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { transport, client } = setup();
    const controller = new AbortController();
    const done = client.runAction({ ...request, signal: controller.signal });
    const outcome = done.catch((e: unknown) => e);
    await until(() => transport.streams[0]?.frames.length === 2);
    controller.abort();
    await until(() => transport.streams[0]!.writeClosed);
    await vi.advanceTimersByTimeAsync(CANCEL_GRACE_MS + 1);
    expect(await outcome).toMatchObject({ name: 'AbortError' });
    await until(() => transport.streams[0]!.readCancelled, 'read side cancelled');
  });

  it('sends CANCEL when aborted while the stream is being opened', async () => {
    const { transport, client } = setup();
    const controller = new AbortController();
    const done = client.runAction({ ...request, signal: controller.signal });
    controller.abort();
    await until(() => transport.streams[0]?.writeClosed === true, 'write side closed');
    expect(transport.streams[0]!.envelopes().map((e) => e.body.type)).toEqual(['ExecuteAction', 'Cancel']);
    transport.streams[0]!.finish();
    await expect(done).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('refuses to start with an already aborted signal', async () => {
    const { transport, client } = setup();
    await expect(client.runAction({ ...request, signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    expect(transport.streams).toHaveLength(0);
  });
});

describe('RelayClient.watchDevices', () => {
  type Status = [string, boolean, string];

  function watch(client: RelayClient, signal?: AbortSignal) {
    const seen: Status[] = [];
    const done = client.watchDevices({ token: 'jwt', signal, onStatus: (id, online, v) => seen.push([id, online, v]) });
    return { seen, done };
  }

  it('sends only a Control header with an empty device id and reports every DEVICE_STATUS', async () => {
    const { transport, client } = setup();
    const { seen, done } = watch(client);
    await until(() => transport.streams[0]?.frames.length === 1, 'header');
    const far = transport.streams[0]!;
    expect(decodeOpenHeader(far.frames[0]!)).toEqual({ deviceId: '', kind: 'Control', token: 'jwt', e2e: null });

    // The snapshot, then changes; one status split over two reads.
    far.status('dev-1', true, '0.1.0');
    far.status('dev-2', false, '');
    const change = encodeFrame(
      encodeEnvelope({ requestId: 0, deviceId: 'dev-2', body: { type: 'DeviceStatus', online: true, nodeVersion: '0.2.0', apps: [] } }),
    );
    far.sendRaw(change.subarray(0, 5));
    await until(() => seen.length === 2, 'snapshot');
    far.sendRaw(change.subarray(5));
    far.status('dev-1', false, '0.1.0');
    await until(() => seen.length === 4, 'changes');
    expect(seen).toEqual([
      ['dev-1', true, '0.1.0'],
      ['dev-2', false, ''],
      ['dev-2', true, '0.2.0'],
      ['dev-1', false, '0.1.0'],
    ]);
    // Nothing but the header was sent, and the write side stays open while watching.
    expect(far.frames).toHaveLength(1);
    expect(far.writeClosed).toBe(false);

    far.finish();
    await expect(done).resolves.toBeUndefined();
    await until(() => far.writeClosed, 'write side closed after the relay finished');
    expect(far.writeAborted).toBe(false);
  });

  it('reports STATUS_SNAPSHOT_END once, after the snapshot and before the changes', async () => {
    const { transport, client } = setup();
    const events: string[] = [];
    const done = client.watchDevices({
      token: 'jwt',
      onStatus: (id, online) => events.push(`${id} ${online ? 'online' : 'offline'}`),
      onSnapshotEnd: (devices) => events.push(`snapshot of ${devices}`),
    });
    await until(() => transport.streams[0]?.frames.length === 1, 'header');
    const far = transport.streams[0]!;
    far.status('dev-1', true);
    far.send({ type: 'StatusSnapshotEnd', devices: 1 }, 0);
    far.status('dev-1', false);
    await until(() => events.length === 3, 'snapshot, end, change');
    expect(events).toEqual(['dev-1 online', 'snapshot of 1', 'dev-1 offline']);
    far.finish();
    await expect(done).resolves.toBeUndefined();
  });

  it('tells a user with no devices so at once: a snapshot end of 0 with no status before it', async () => {
    const { transport, client } = setup();
    let ended: number | null = null;
    const seen: string[] = [];
    const done = client.watchDevices({ token: 'jwt', onStatus: (id) => seen.push(id), onSnapshotEnd: (n) => (ended = n) });
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.send({ type: 'StatusSnapshotEnd', devices: 0 }, 0);
    // The stream stays open (later enrolments arrive as changes), yet the caller knows now.
    await until(() => ended !== null, 'snapshot end');
    expect(ended).toBe(0);
    expect(seen).toEqual([]);
    expect(transport.streams[0]!.writeClosed).toBe(false);
    transport.streams[0]!.finish();
    await done;
  });

  it('rejects a second STATUS_SNAPSHOT_END as an unexpected message', async () => {
    const { transport, client } = setup();
    const done = client.watchDevices({ token: 'jwt', onStatus: () => {} });
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.send({ type: 'StatusSnapshotEnd', devices: 0 }, 0);
    transport.streams[0]!.send({ type: 'StatusSnapshotEnd', devices: 0 }, 0);
    await expect(done).rejects.toMatchObject({ code: 'unexpected_message' });
  });

  it('rejects with a RemoteError for an ERROR envelope', async () => {
    const { transport, client } = setup();
    const { seen, done } = watch(client);
    await until(() => transport.streams.length === 1);
    const far = transport.streams[0]!;
    far.send({ type: 'Error', code: 'unauthenticated', message: 'token expired' }, 0);
    far.finish();
    const err = await done.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toMatchObject({ code: 'unauthenticated', message: 'token expired' });
    expect(seen).toEqual([]);
  });

  it('on abort closes the write side, resolves and reports nothing more', async () => {
    const { transport, client } = setup();
    const controller = new AbortController();
    const { seen, done } = watch(client, controller.signal);
    await until(() => transport.streams[0]?.frames.length === 1);
    const far = transport.streams[0]!;
    far.status('dev-1', true);
    await until(() => seen.length === 1);

    controller.abort();
    await expect(done).resolves.toBeUndefined();
    await until(() => far.writeClosed, 'write side closed');
    expect(far.writeAborted).toBe(false);
    expect(far.frames).toHaveLength(1); // still nothing but the header

    far.status('dev-1', false); // in flight before the relay saw the finish
    far.finish();
    await until(() => far.readable.locked === false, 'read side drained');
    expect(seen).toEqual([['dev-1', true, '0.1.0']]);
  });

  it('with an already aborted signal opens no stream', async () => {
    const { transport, client } = setup();
    await expect(watch(client, AbortSignal.abort()).done).resolves.toBeUndefined();
    expect(transport.streams).toHaveLength(0);
  });

  it('rejects when the stream is reset', async () => {
    const { transport, client } = setup();
    const { done } = watch(client);
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.resetStream(7);
    const err = await done.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportError);
    expect(err).toMatchObject({ code: 'stream_reset', message: expect.stringContaining('while watching devices (code 7)') });
  });

  it('rejects when the stream ends mid-frame', async () => {
    const { transport, client } = setup();
    const { done } = watch(client);
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.sendRaw(Uint8Array.of(0, 0, 0, 9, 1));
    transport.streams[0]!.finish();
    await expect(done).rejects.toMatchObject({ code: 'malformed_frame', message: expect.stringContaining('truncated') });
  });

  it('rejects and resets the stream on another message type', async () => {
    const { transport, client } = setup();
    const { done } = watch(client);
    await until(() => transport.streams.length === 1);
    const far = transport.streams[0]!;
    far.send({ type: 'StreamChunk', seq: 0, data: 'x' });
    await expect(done).rejects.toMatchObject({ code: 'unexpected_message', message: expect.stringContaining('StreamChunk') });
    await until(() => far.readCancelled && far.writeAborted, 'stream reset');
  });

  it('rejects on a malformed envelope', async () => {
    const { transport, client } = setup();
    const { done } = watch(client);
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.sendRaw(encodeFrame(Uint8Array.of(0, 0, 99)));
    await expect(done).rejects.toMatchObject({ code: 'malformed_frame', message: 'malformed envelope: unknown message type 99' });
  });

  it('passes on what onStatus throws and resets the stream', async () => {
    const { transport, client } = setup();
    const boom = new Error('boom');
    const done = client.watchDevices({
      token: 'jwt',
      onStatus: () => {
        throw boom;
      },
    });
    await until(() => transport.streams.length === 1);
    const far = transport.streams[0]!;
    far.status('dev-1', true);
    await expect(done).rejects.toBe(boom);
    await until(() => far.readCancelled && far.writeAborted, 'stream reset');
  });

  it('refuses to start on a closed session', async () => {
    const { transport, client } = setup();
    client.close('bye');
    await client.closed;
    await expect(watch(client).done).rejects.toMatchObject({ code: 'session_closed' });
    expect(transport.streams).toHaveLength(0);
  });
});

describe('RelayClient.request (a pump over the request machine)', () => {
  it('ends at the final message without waiting for the FIN, and finishes cleanly', async () => {
    const { transport, client } = setup();
    const got: string[] = [];
    const done = (async () => {
      for await (const env of client.request({ deviceId: 'dev-1', token: 'jwt', body: { type: 'InstallApp', appId: 'a', version: null } })) {
        got.push(env.body.type);
      }
    })();
    await until(() => transport.streams[0]?.frames.length === 2, 'header + request');
    const far = transport.streams[0]!;
    far.send({ type: 'StreamChunk', seq: 0, data: '{"state":"installing"}' });
    far.send({ type: 'StreamEnd', chunks: 1, elapsedMs: 3 });
    await done; // no FIN from the far end
    expect(got).toEqual(['StreamChunk', 'StreamEnd']);
    await until(() => far.writeClosed, 'clean finish');
    expect(far.reset).toBe(false);
  });

  it('reports a message the machine refuses as unexpected and resets the stream', async () => {
    const { transport, client } = setup();
    const it = client.request({ deviceId: 'dev-1', token: 'jwt', body: { type: 'GetStatus' } });
    const first = it.next();
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.send({ type: 'Pong', nonce: 1 });
    await expect(first).rejects.toMatchObject({ code: 'unexpected_message', message: 'unexpected Pong on a request stream' });
    await until(() => transport.streams[0]!.reset, 'reset');
  });

  it('on an action stream, a DEVICE_STATUS is no answer', async () => {
    const { transport, client } = setup();
    const done = client.runAction(request);
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.status('dev-1', true);
    await expect(done).rejects.toMatchObject({ code: 'unexpected_message' });
  });
});

describe('RelayClient session', () => {
  it('reports a clean close through the promise, the event and the callback', async () => {
    const transport = new FakeTransport();
    const viaCallback: SessionClosed[] = [];
    const client = RelayClient.fromTransport(transport, { onClosed: (i) => viaCallback.push(i) });
    const viaEvent: SessionClosed[] = [];
    client.addEventListener('closed', (e) => viaEvent.push((e as CustomEvent<SessionClosed>).detail));
    expect(client.isClosed).toBe(false);

    client.close('bye');
    const info = await client.closed;
    expect(info).toEqual({ clean: true, closeCode: 0, reason: 'bye' });
    await until(() => viaEvent.length === 1);
    expect(viaEvent).toEqual([info]);
    expect(viaCallback).toEqual([info]);
    expect(client.isClosed).toBe(true);
    await expect(client.runAction(request)).rejects.toMatchObject({ code: 'session_closed' });
  });

  it('reports a lost session without rejecting', async () => {
    const transport = new FakeTransport();
    const client = RelayClient.fromTransport(transport);
    transport.lose(new Error('connection timed out'));
    await expect(client.closed).resolves.toEqual({ clean: false, reason: 'connection timed out' });
  });

  it('fails to connect clearly where WebTransport is missing', async () => {
    await expect(RelayClient.connect('https://127.0.0.1:4433/wt', [])).rejects.toMatchObject({
      code: 'connection_failed',
    });
  });
});

describe('hashFromHex', () => {
  it('parses 32 bytes of hex, with or without separators', () => {
    const hex = 'ab'.repeat(32);
    expect(hashFromHex(hex)).toEqual(new Uint8Array(32).fill(0xab));
    expect(hashFromHex(hex.match(/../g)!.join(':').toUpperCase())).toEqual(new Uint8Array(32).fill(0xab));
  });

  it('refuses anything else', () => {
    expect(() => hashFromHex('abcd')).toThrow(TransportError);
    expect(() => hashFromHex('zz'.repeat(32))).toThrow(/32 bytes of hex/);
  });
});
