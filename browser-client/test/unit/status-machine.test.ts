/** The device-status stream's machine (src/tunnel/machine/status.ts): bytes in, events out. */

import { describe, expect, it } from 'vitest';

import { decodeOpenHeader, encodeEnvelope, encodeFrame, FrameReader, type Body } from '../../src/tunnel/codec';
import { StatusWatch } from '../../src/tunnel/machine/status';

const frame = (body: Body, deviceId = '') => encodeFrame(encodeEnvelope({ requestId: 0, deviceId, body }));
const status = (deviceId: string, online: boolean) => frame({ type: 'DeviceStatus', online, nodeVersion: '0.1.0', apps: [] }, deviceId);

describe('StatusWatch', () => {
  it('sends only a Control header with an empty device id, once', () => {
    const w = new StatusWatch('jwt');
    const frames = new FrameReader();
    frames.push(w.pollTransmit()!);
    expect(decodeOpenHeader(frames.next()!)).toEqual({ deviceId: '', kind: 'Control', token: 'jwt', e2e: null });
    expect(frames.next()).toBeNull();
    expect(w.pollTransmit()).toBeNull();
    expect(w.deadline()).toBeNull();
  });

  it('reports the snapshot, its end and the changes, across split reads', () => {
    const w = new StatusWatch('jwt');
    const wire = new Uint8Array([...status('a', true), ...frame({ type: 'StatusSnapshotEnd', devices: 1 }), ...status('a', false)]);
    const events = [...w.receive(wire.subarray(0, 7)), ...w.receive(wire.subarray(7))];
    expect(events).toEqual([
      { type: 'status', deviceId: 'a', online: true, nodeVersion: '0.1.0' },
      { type: 'snapshot_end', devices: 1 },
      { type: 'status', deviceId: 'a', online: false, nodeVersion: '0.1.0' },
    ]);
    expect(w.isSnapshotComplete).toBe(true);
    expect(w.finish()).toEqual({ type: 'ended' });
    expect(w.isDone).toBe(true);
    expect(w.receive(status('a', true))).toEqual([]);
  });

  it('tells "no devices" from "slow": a snapshot end of 0 alone', () => {
    const w = new StatusWatch('jwt');
    expect(w.isSnapshotComplete).toBe(false);
    expect(w.receive(frame({ type: 'StatusSnapshotEnd', devices: 0 }))).toEqual([{ type: 'snapshot_end', devices: 0 }]);
    expect(w.isSnapshotComplete).toBe(true);
    expect(w.isDone).toBe(false);
  });

  it('ends on an ERROR, a second snapshot end, another message type, bad bytes or a cut frame', () => {
    const failed = (bytes: Uint8Array[], fin = false) => {
      const w = new StatusWatch('jwt');
      const events = bytes.flatMap((b) => w.receive(b));
      if (fin) events.push(w.finish()!);
      const last = events.at(-1);
      expect(w.isDone).toBe(true);
      return last?.type === 'failed' ? last.refusal : null;
    };
    expect(failed([frame({ type: 'Error', code: 'unauthenticated', message: 'token expired' })])).toMatchObject({
      reason: 'remote_error',
      code: 'unauthenticated',
      remoteMessage: 'token expired',
    });
    const end = frame({ type: 'StatusSnapshotEnd', devices: 0 });
    expect(failed([end, end])).toMatchObject({ reason: 'unexpected_message', code: 'unsupported' });
    expect(failed([frame({ type: 'StreamChunk', seq: 0, data: 'x' })])).toMatchObject({
      reason: 'unexpected_message',
      message: 'unexpected StreamChunk on a device-status stream',
    });
    expect(failed([Uint8Array.of(0, 0, 0, 3, 1, 0, 99)])).toMatchObject({
      reason: 'malformed_message',
      code: 'malformed_frame',
      message: 'malformed envelope: unknown message type 99',
    });
    expect(failed([Uint8Array.of(0, 0, 0, 9, 1)], true)).toMatchObject({ reason: 'malformed_frame', message: expect.stringContaining('truncated') });
  });
});
