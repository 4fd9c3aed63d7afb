/**
 * The stream layer of end-to-end encryption (src/e2e/stream.ts): header layout as the
 * desktop node parses it (desktop-node/src/e2e.rs), pairing links, and answers.
 */

import { describe, expect, it } from 'vitest';

import { importKeyPair, openRequest, REQUEST_HEADER_LEN, type ResponseSealer } from '../../src/e2e/index';
import { MODE_ACTION, MODE_PAIR, keyId, openAnswer, parsePairingLink, sealAction, sealPairing } from '../../src/e2e/stream';
import { RelayClient } from '../../src/tunnel/client';
import { getDeviceState } from '../../src/tunnel/requests';
import {
  decodeEnvelope,
  decodeOpenHeader,
  encodeEnvelope,
  encodeFrame,
  fromHex,
  toHex,
  type Envelope,
} from '../../src/tunnel/codec';

import { FakeTransport, until, type FarEnd } from './fake-relay';
import vectors from '../../../crypto/vectors/e2e-vectors.json';

// The keys of crypto/vectors/e2e-vectors.json (written by the Rust side).
const desktopSk = fromHex(vectors.desktop_sk);
const browserSk = fromHex(vectors.browser_sk);
const desktopPk = fromHex(vectors.desktop_pk);
const browserPk = fromHex(vectors.browser_pk);

describe('pairing links', () => {
  it('reads the fragment desktop-node pair prints', () => {
    const link = parsePairingLink(`http://127.0.0.1:8080/#pair=dev-1.${vectors.desktop_pk}.00112233445566778899aabbccddeeff`);
    expect(link?.deviceId).toBe('dev-1');
    expect(toHex(link!.desktopPk)).toBe(vectors.desktop_pk);
    expect(toHex(link!.secret)).toBe('00112233445566778899aabbccddeeff');
  });
  it('refuses anything else', () => {
    expect(parsePairingLink('http://x/')).toBeNull();
    expect(parsePairingLink('http://x/#pair=a.b.c')).toBeNull();
    expect(parsePairingLink(`http://x/#pair=.${vectors.desktop_pk}.00`)).toBeNull();
  });
});

describe('sealed streams', () => {
  it('an action: mode, key id, HPKE header in OpenHeader.e2e; the ciphertext in the first frame', async () => {
    const browser = await importKeyPair(browserSk, browserPk);
    const request: Envelope = { requestId: 7, deviceId: 'dev-1', body: { type: 'GetStatus' } };
    const s = await sealAction(desktopPk, browser, browserPk, 'dev-1', encodeEnvelope(request), 1_790_000_000);
    expect(s.e2e.length).toBe(1 + 8 + REQUEST_HEADER_LEN);
    expect(s.e2e[0]).toBe(MODE_ACTION);
    expect(toHex(s.e2e.slice(1, 9))).toBe(toHex(await keyId(browserPk)));
    // The desktop's view: the header's last 41 bytes and the frame make the sealed request.
    const desktop = await importKeyPair(desktopSk, desktopPk);
    const sealed = new Uint8Array([...s.e2e.slice(9), ...s.first]);
    const { request: plain, sealer } = await openRequest(desktop, browserPk, new TextEncoder().encode('dev-1'), sealed);
    expect(decodeEnvelope(plain)).toEqual(request);
    // Answers: sealed envelopes, the last one final.
    const end: Envelope = { requestId: 7, deviceId: '', body: { type: 'StreamEnd', chunks: 0, elapsedMs: 1 } };
    const frame = await sealer.sealChunk(encodeEnvelope(end), true);
    const opened = await openAnswer(s.opener, frame);
    expect(opened.sealed).toBe(true);
    expect(opened.envelope.body.type).toBe('StreamEnd');
    s.opener.finish();
  });

  it('a pairing: mode, browser key, and the secret sealed as JSON', async () => {
    const browser = await importKeyPair(browserSk, browserPk);
    const link = { deviceId: 'dev-1', desktopPk, secret: fromHex('a1b2c3') };
    const s = await sealPairing(link, browser, browserPk, 'my laptop', 1_790_000_000);
    expect(s.e2e[0]).toBe(MODE_PAIR);
    expect(toHex(s.e2e.slice(1, 33))).toBe(toHex(browserPk));
    const desktop = await importKeyPair(desktopSk, desktopPk);
    const sealed = new Uint8Array([...s.e2e.slice(33), ...s.first]);
    const { request } = await openRequest(desktop, browserPk, new TextEncoder().encode('dev-1'), sealed);
    expect(JSON.parse(new TextDecoder().decode(request))).toEqual({ secret: 'a1b2c3', name: 'my laptop' });
  });

  it('a plain ERROR is passed on (a refusal before any context); other plain bytes are not', async () => {
    const browser = await importKeyPair(browserSk, browserPk);
    const s = await sealAction(desktopPk, browser, browserPk, 'dev-1', new Uint8Array([1]));
    const refusal: Envelope = { requestId: 0, deviceId: '', body: { type: 'Error', code: 'denied', message: 'not paired' } };
    const opened = await openAnswer(s.opener, encodeEnvelope(refusal));
    expect(opened).toEqual({ envelope: refusal, sealed: false });
    const chunk: Envelope = { requestId: 0, deviceId: '', body: { type: 'StreamChunk', seq: 0, data: 'forged' } };
    await expect(openAnswer(s.opener, encodeEnvelope(chunk))).rejects.toThrow();
  });
});

/** A one-stream fake session whose far end this test plays as the desktop. */
function desktopTransport() {
  const transport = new FakeTransport();
  const far = (): FarEnd => transport.streams[0]!;
  return {
    transport,
    get frames(): Uint8Array[] {
      return transport.streams[0]?.frames ?? [];
    },
    twoFrames: until(() => (transport.streams[0]?.frames.length ?? 0) >= 2, 'header and request'),
    enqueue: (bytes: Uint8Array) => far().sendRaw(bytes),
    close: () => far().finish(),
  };
}

describe('RelayClient.runAction with e2e', () => {
  async function run(answer: (sealer: ResponseSealer, requestId: number) => Promise<Uint8Array[]>) {
    const t = desktopTransport();
    const client = RelayClient.fromTransport(t.transport);
    const browserKey = await importKeyPair(browserSk, browserPk);
    const chunks: string[] = [];
    const result = client.runAction({
      deviceId: 'dev-1',
      token: 't',
      appId: 'hello-ai',
      action: 'write',
      payload: '{"topic":"secret plans"}',
      onChunk: (d) => chunks.push(d),
      e2e: { desktopPk, browserKey, browserPk },
    });
    await t.twoFrames;
    const header = decodeOpenHeader(t.frames[0]!);
    // The relay's view: the header's e2e bytes and a ciphertext; no plaintext anywhere.
    const wire = new TextDecoder('latin1').decode(new Uint8Array([...t.frames[0]!, ...t.frames[1]!]));
    expect(wire).not.toContain('secret plans');
    expect(wire).not.toContain('hello-ai');
    expect(header.e2e?.[0]).toBe(MODE_ACTION);
    const desktop = await importKeyPair(desktopSk, desktopPk);
    const sealed = new Uint8Array([...header.e2e!.slice(9), ...t.frames[1]!]);
    const { request, sealer } = await openRequest(desktop, browserPk, new TextEncoder().encode('dev-1'), sealed);
    const env = decodeEnvelope(request);
    expect(env.body).toMatchObject({ type: 'ExecuteAction', appId: 'hello-ai', payload: '{"topic":"secret plans"}' });
    for (const frame of await answer(sealer, env.requestId)) t.enqueue(encodeFrame(frame));
    t.close();
    return { result, chunks };
  }

  it('seals the request and opens the sealed answer', async () => {
    const { result, chunks } = await run(async (sealer, requestId) => [
      await sealer.sealChunk(encodeEnvelope({ requestId, deviceId: '', body: { type: 'StreamChunk', seq: 0, data: 'Echo: secret plans' } }), false),
      await sealer.sealChunk(encodeEnvelope({ requestId, deviceId: '', body: { type: 'StreamEnd', chunks: 1, elapsedMs: 3 } }), true),
    ]);
    await expect(result).resolves.toEqual({ chunks: 1, elapsedMs: 3 });
    expect(chunks).toEqual(['Echo: secret plans']);
  });

  it('refuses a plain chunk injected into an encrypted answer', async () => {
    const { result } = await run(async (_sealer, requestId) => [
      encodeEnvelope({ requestId, deviceId: '', body: { type: 'StreamChunk', seq: 0, data: 'forged by the relay' } }),
    ]);
    await expect(result).rejects.toMatchObject({ code: 'e2e_failed' });
  });

  it('refuses a STREAM_END that is not the final chunk (truncation)', async () => {
    const { result } = await run(async (sealer, requestId) => [
      await sealer.sealChunk(encodeEnvelope({ requestId, deviceId: '', body: { type: 'StreamEnd', chunks: 0, elapsedMs: 0 } }), false),
    ]);
    await expect(result).rejects.toMatchObject({ code: 'e2e_failed' });
  });

  it("passes on the desktop's plain refusal", async () => {
    const { result } = await run(async () => [
      encodeEnvelope({ requestId: 0, deviceId: '', body: { type: 'Error', code: 'denied', message: 'this browser is not paired' } }),
    ]);
    await expect(result).rejects.toMatchObject({ code: 'denied' });
  });
});

describe('issue 11, findings 7 and 2: frames on an encrypted stream', () => {
  async function openedBy(t: ReturnType<typeof desktopTransport>) {
    await t.twoFrames;
    const header = decodeOpenHeader(t.frames[0]!);
    const desktop = await importKeyPair(desktopSk, desktopPk);
    const sealed = new Uint8Array([...header.e2e!.slice(9), ...t.frames[1]!]);
    return { header, ...(await openRequest(desktop, browserPk, new TextEncoder().encode('dev-1'), sealed)) };
  }

  it('refuses a plain ERROR once the sealed answer began (the relay cutting it short)', async () => {
    const t = desktopTransport();
    const client = RelayClient.fromTransport(t.transport);
    const browserKey = await importKeyPair(browserSk, browserPk);
    const result = client.runAction({ deviceId: 'dev-1', token: 't', appId: 'a', action: 'b', payload: '{}', e2e: { desktopPk, browserKey, browserPk } });
    const { sealer, request } = await openedBy(t);
    const requestId = decodeEnvelope(request).requestId;
    t.enqueue(encodeFrame(await sealer.sealChunk(encodeEnvelope({ requestId, deviceId: '', body: { type: 'StreamChunk', seq: 0, data: 'half of the answer' } }), false)));
    // The relay's own message, as a desktop's refusal would look.
    t.enqueue(encodeFrame(encodeEnvelope({ requestId: 0, deviceId: '', body: { type: 'Error', code: 'app_failed', message: 'injected' } })));
    t.close();
    await expect(result).rejects.toMatchObject({ code: 'e2e_failed', message: expect.stringContaining('plain frame inside the sealed answer') });
  });

  it('seals the CANCEL: the desktop opens it with the request context, and it is no plain envelope', async () => {
    const t = desktopTransport();
    const client = RelayClient.fromTransport(t.transport);
    const browserKey = await importKeyPair(browserSk, browserPk);
    const controller = new AbortController();
    const result = client.runAction({
      deviceId: 'dev-1',
      token: 't',
      appId: 'a',
      action: 'b',
      payload: '{}',
      signal: controller.signal,
      e2e: { desktopPk, browserKey, browserPk },
    });
    result.catch(() => {});
    const { sealer, request, controls } = await openedBy(t);
    const requestId = decodeEnvelope(request).requestId;
    t.enqueue(encodeFrame(await sealer.sealChunk(encodeEnvelope({ requestId, deviceId: '', body: { type: 'StreamChunk', seq: 0, data: 'x' } }), false)));
    controller.abort();
    for (let i = 0; i < 100 && t.frames.length < 3; i++) await new Promise((r) => setTimeout(r, 10));
    const cancel = t.frames[2]!;
    expect(() => {
      if (decodeEnvelope(cancel).body.type === 'Cancel') throw new Error('a plain CANCEL');
    }).toThrow();
    expect(decodeEnvelope(await controls.open(cancel))).toEqual({ requestId, deviceId: 'dev-1', body: { type: 'Cancel' } });
    t.enqueue(encodeFrame(await sealer.sealChunk(encodeEnvelope({ requestId, deviceId: '', body: { type: 'Error', code: 'cancelled', message: 'the action was cancelled' } }), true)));
    t.close();
    await expect(result).rejects.toMatchObject({ code: 'cancelled' });
  });

  it('getDeviceState seals GET_STATUS for a paired device and opens the sealed DEVICE_STATUS', async () => {
    const t = desktopTransport();
    const client = RelayClient.fromTransport(t.transport);
    const browserKey = await importKeyPair(browserSk, browserPk);
    const state = getDeviceState(client, { deviceId: 'dev-1', token: 't', e2e: { desktopPk, browserKey, browserPk } });
    const { header, sealer, request } = await openedBy(t);
    expect(header.kind).toBe('Control');
    expect(header.e2e?.[0]).toBe(MODE_ACTION);
    const env = decodeEnvelope(request);
    expect(env.body).toEqual({ type: 'GetStatus' });
    const apps = [{ id: 'hello-ai', version: '1.0.0', enabled: true }];
    t.enqueue(encodeFrame(await sealer.sealChunk(encodeEnvelope({ requestId: env.requestId, deviceId: '', body: { type: 'DeviceStatus', online: true, nodeVersion: '1', apps } }), true)));
    t.close();
    await expect(state).resolves.toEqual({ online: true, nodeVersion: '1', apps, providers: [], unloadable: [] });
  });

  it('getDeviceState refuses a sealed answer cut before its final chunk', async () => {
    const t = desktopTransport();
    const client = RelayClient.fromTransport(t.transport);
    const browserKey = await importKeyPair(browserSk, browserPk);
    const state = getDeviceState(client, { deviceId: 'dev-1', token: 't', e2e: { desktopPk, browserKey, browserPk } });
    const { sealer, request } = await openedBy(t);
    const env = decodeEnvelope(request);
    t.enqueue(encodeFrame(await sealer.sealChunk(encodeEnvelope({ requestId: env.requestId, deviceId: '', body: { type: 'DeviceStatus', online: true, nodeVersion: '1', apps: [] } }), false)));
    t.close();
    await expect(state).rejects.toMatchObject({ code: 'e2e_failed' });
  });
});

describe('RelayClient.pair', () => {
  it('sends the sealed pairing and resolves on the sealed confirmation', async () => {
    const t = desktopTransport();
    const client = RelayClient.fromTransport(t.transport);
    const browserKey = await importKeyPair(browserSk, browserPk);
    const link = parsePairingLink(`http://localhost/#pair=dev-1.${vectors.desktop_pk}.0a0b0c0d`)!;
    const done = client.pair({ link, token: 't', browserKey, browserPk, name: 'laptop' });
    await new Promise((r) => setTimeout(r, 50));
    // Only the header and one frame: the desktop's answer below.
    const header = decodeOpenHeader(t.frames[0]!);
    expect(header.e2e?.[0]).toBe(MODE_PAIR);
    const desktop = await importKeyPair(desktopSk, desktopPk);
    const sealed = new Uint8Array([...header.e2e!.slice(33), ...t.frames[1]!]);
    const { request, sealer } = await openRequest(desktop, browserPk, new TextEncoder().encode('dev-1'), sealed);
    expect(JSON.parse(new TextDecoder().decode(request))).toEqual({ secret: '0a0b0c0d', name: 'laptop' });
    const end = encodeEnvelope({ requestId: 0, deviceId: '', body: { type: 'StreamEnd', chunks: 0, elapsedMs: 0 } });
    t.enqueue(encodeFrame(await sealer.sealChunk(end, true)));
    t.close();
    await expect(done).resolves.toBeUndefined();
  });
});
