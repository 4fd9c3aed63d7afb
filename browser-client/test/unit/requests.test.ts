/** GET_STATUS and INSTALL_APP over RelayClient.request, against a fake relay. */

import { describe, expect, it } from 'vitest';
import { RemoteError, TransportError } from '../../src/tunnel/client';
import { getDeviceState, installApp, parseInstallProgress, type InstallProgress } from '../../src/tunnel/requests';
import { fakeClient, until } from './fake-relay';

describe('getDeviceState', () => {
  it('sends GET_STATUS on an Action stream and returns the apps', async () => {
    const { transport, client } = fakeClient();
    const answer = getDeviceState(client, { deviceId: 'dev-1', token: 'jwt' });
    await until(() => transport.streams[0]?.frames.length === 2, 'header + GET_STATUS');
    const far = transport.streams[0]!;
    expect(far.header()).toEqual({ deviceId: 'dev-1', kind: 'Control', token: 'jwt', e2e: null });
    expect(far.envelopes().map((e) => e.body)).toEqual([{ type: 'GetStatus' }]);
    far.send({
      type: 'DeviceStatus',
      online: true,
      nodeVersion: '0.1.0',
      apps: [{ id: 'hello-ai', version: '0.1.0', enabled: true }],
    });
    far.finish();
    // A desktop that says nothing of providers or unloadable apps (protocol 1.1): empty lists.
    await expect(answer).resolves.toEqual({
      online: true,
      nodeVersion: '0.1.0',
      apps: [{ id: 'hello-ai', version: '0.1.0', enabled: true }],
      providers: [],
      unloadable: [],
    });
    // Read to the end: our side is finished cleanly, not reset.
    await until(() => far.writeClosed, 'clean finish');
    expect(far.reset).toBe(false);
  });

  it('turns an ERROR into a RemoteError and an empty stream into a TransportError', async () => {
    const a = fakeClient();
    const refused = getDeviceState(a.client, { deviceId: 'dev-1', token: 'jwt' });
    await until(() => a.transport.streams.length === 1);
    a.transport.streams[0]!.send({ type: 'Error', code: 'device_offline', message: 'the device is offline' });
    await expect(refused).rejects.toSatisfy((e) => e instanceof RemoteError && e.code === 'device_offline');

    const b = fakeClient();
    const empty = getDeviceState(b.client, { deviceId: 'dev-1', token: 'jwt' });
    await until(() => b.transport.streams.length === 1);
    b.transport.streams[0]!.finish();
    await expect(empty).rejects.toSatisfy((e) => e instanceof TransportError && e.code === 'stream_ended');
  });
});

describe('installApp', () => {
  it('reports pending approval, download progress and the installed version', async () => {
    const { transport, client } = fakeClient();
    const seen: InstallProgress[] = [];
    const done = installApp(client, {
      deviceId: 'dev-1',
      token: 'jwt',
      appId: 'seo-writer',
      version: '1.2.0',
      onProgress: (p) => seen.push(p),
    });
    await until(() => transport.streams[0]?.frames.length === 2);
    const far = transport.streams[0]!;
    expect(far.envelopes()[0]!.body).toEqual({ type: 'InstallApp', appId: 'seo-writer', version: '1.2.0' });
    far.send({ type: 'StreamChunk', seq: 0, data: '{"state":"pending_approval"}' });
    await until(() => seen.length === 1);
    expect(seen[0]).toEqual({ state: 'pending_approval' });
    far.send({ type: 'StreamChunk', seq: 1, data: '{"state":"downloading","percent":40}' });
    far.send({ type: 'StreamChunk', seq: 2, data: '{"state":"installed","version":"1.2.0"}' });
    far.send({ type: 'StreamEnd', chunks: 3, elapsedMs: 900 });
    far.finish();
    await expect(done).resolves.toBe('1.2.0');
    expect(seen).toEqual([
      { state: 'pending_approval' },
      { state: 'downloading', percent: 40 },
      { state: 'installed', version: '1.2.0' },
    ]);
  });

  it('rejects with code denied when the person refuses on the desktop', async () => {
    const { transport, client } = fakeClient();
    const done = installApp(client, {
      deviceId: 'dev-1',
      token: 'jwt',
      appId: 'seo-writer',
      version: null,
      onProgress: () => undefined,
    });
    await until(() => transport.streams.length === 1);
    const far = transport.streams[0]!;
    far.send({ type: 'StreamChunk', seq: 0, data: '{"state":"pending_approval"}' });
    far.send({ type: 'Error', code: 'denied', message: 'the install was denied on the desktop' });
    far.finish();
    await expect(done).rejects.toSatisfy((e) => e instanceof RemoteError && e.code === 'denied');
  });

  it('refuses a stream that ends without STREAM_END, and progress that is not JSON', async () => {
    const { transport, client } = fakeClient();
    const cut = installApp(client, { deviceId: 'd', token: 't', appId: 'a', version: null, onProgress: () => {} });
    await until(() => transport.streams.length === 1);
    transport.streams[0]!.send({ type: 'StreamChunk', seq: 0, data: '{"state":"pending_approval"}' });
    transport.streams[0]!.finish();
    await expect(cut).rejects.toSatisfy((e) => e instanceof TransportError && e.code === 'stream_ended');

    expect(() => parseInstallProgress('pending')).toThrow(/not JSON/);
    expect(() => parseInstallProgress('{"percent":3}')).toThrow(/no state/);
    expect(parseInstallProgress('{"state":"verifying"}')).toEqual({ state: 'other', name: 'verifying' });
    expect(parseInstallProgress('{"state":"installing"}')).toEqual({ state: 'installing' });
    expect(parseInstallProgress('{"state":"pending_approval","id":"a","permissions":["x"]}')).toEqual({ state: 'pending_approval' });
    expect(parseInstallProgress('{"state":"downloading","percent":250}')).toEqual({ state: 'downloading', percent: 100 });
  });

  it('stops waiting (and resets the stream) when aborted', async () => {
    const { transport, client } = fakeClient();
    const controller = new AbortController();
    const done = installApp(client, {
      deviceId: 'd',
      token: 't',
      appId: 'a',
      version: null,
      onProgress: () => {},
      signal: controller.signal,
    });
    await until(() => transport.streams.length === 1);
    controller.abort();
    await expect(done).rejects.toSatisfy((e) => e instanceof DOMException && e.name === 'AbortError');
    await until(() => transport.streams[0]!.reset, 'reset');
  });
});
