/**
 * The TypeScript codec against the Rust side's vectors (tunnel/vectors/tunnel-vectors.json,
 * or the file named by VECTORS_FILE), plus edge cases of its own.
 */

import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

import {
  CodecError,
  FrameReader,
  MAX_FRAME_LEN,
  PROTOCOL_MAJOR,
  PROTOCOL_MINOR,
  Reader,
  Writer,
  decodeEnvelope,
  decodeHeaderVersion,
  decodeHello,
  decodeOpenHeader,
  decodeRelayHeader,
  encodeEnvelope,
  encodeFrame,
  encodeHello,
  encodeOpenHeader,
  encodeRelayHeader,
  fromHex,
  toHex,
  type Body,
  type Envelope,
} from '../../src/tunnel/codec';
import { bytes, kind, num, obj, optBytes, str, toBody, type Json } from './serde-json';

// --- the vectors file -----------------------------------------------------------------

const here = dirname(fileURLToPath(import.meta.url));
const vectorsPath =
  process.env['VECTORS_FILE'] || resolve(here, '../../../tunnel/vectors/tunnel-vectors.json');

type Kind = 'open_header' | 'relay_header' | 'hello' | 'envelope' | 'frame';

interface VectorFile {
  protocol: string;
  max_frame_len: number;
  vectors: { name: string; kind: Kind; value: unknown; hex: string; decode_only?: boolean }[];
  invalid: { name: string; kind: Kind; hex: string; error: string }[];
}

function loadVectors(): VectorFile {
  if (!existsSync(vectorsPath)) {
    throw new Error(
      `test vectors not found at ${vectorsPath}: run the Rust tests of the tunnel crate ` +
        '(they write them) or set VECTORS_FILE',
    );
  }
  return JSON.parse(readFileSync(vectorsPath, 'utf8')) as VectorFile;
}

/** Encode and decode functions for one kind, with the JSON value converted for them. */
function codecFor(kind_: Kind, value: Json): { value: unknown; encode: () => Uint8Array; decode: (b: Uint8Array) => unknown } {
  switch (kind_) {
    case 'open_header': {
      const o = obj(value, 'open header');
      const h = { deviceId: str(o, 'device_id'), kind: kind(o['kind']), token: str(o, 'token'), e2e: optBytes(o['e2e']) };
      return { value: h, encode: () => encodeOpenHeader(h), decode: decodeOpenHeader };
    }
    case 'relay_header': {
      const o = obj(value, 'relay header');
      const h = { userId: str(o, 'user_id'), sessionId: num(o, 'session_id'), kind: kind(o['kind']), e2e: optBytes(o['e2e']) };
      return { value: h, encode: () => encodeRelayHeader(h), decode: decodeRelayHeader };
    }
    case 'hello': {
      const o = obj(value, 'hello');
      const h = { deviceToken: str(o, 'device_token'), nodeVersion: str(o, 'node_version'), identityKey: bytes(o['identity_key']) };
      return { value: h, encode: () => encodeHello(h), decode: decodeHello };
    }
    case 'envelope': {
      const o = obj(value, 'envelope');
      const e: Envelope = { requestId: num(o, 'request_id'), deviceId: str(o, 'device_id'), body: toBody(o['body']) };
      return { value: e, encode: () => encodeEnvelope(e), decode: decodeEnvelope };
    }
    case 'frame': {
      const body = fromHex(str(obj(value, 'frame'), 'body_hex'));
      return { value: body, encode: () => encodeFrame(body), decode: decodeOneFrame };
    }
  }
}

/** Decoder for invalid entries of any kind. */
function decoderFor(kind_: Kind): (b: Uint8Array) => unknown {
  switch (kind_) {
    case 'open_header':
      return decodeOpenHeader;
    case 'relay_header':
      return decodeRelayHeader;
    case 'hello':
      return decodeHello;
    case 'envelope':
      return decodeEnvelope;
    case 'frame':
      return decodeOneFrame;
  }
}

/** A whole stream holding exactly one frame: its body. */
function decodeOneFrame(stream: Uint8Array): Uint8Array {
  const fr = new FrameReader();
  fr.push(stream);
  const frames: Uint8Array[] = [];
  for (let f = fr.next(); f !== null; f = fr.next()) frames.push(f);
  fr.finish();
  if (frames.length !== 1 || !frames[0]) throw new Error(`expected one frame, got ${frames.length}`);
  return frames[0];
}

/** True when a JSON value holds an integer JavaScript numbers cannot represent exactly. */
function hasUnsafeInteger(v: Json): boolean {
  if (typeof v === 'number') return Number.isInteger(v) && !Number.isSafeInteger(v);
  if (Array.isArray(v)) return v.some(hasUnsafeInteger);
  if (v !== null && typeof v === 'object') return Object.values(v).some(hasUnsafeInteger);
  return false;
}

describe(`vectors from ${vectorsPath}`, () => {
  const file = loadVectors();

  it('describe protocol 1.2 (the version of this client) with a 1 MiB frame limit', () => {
    expect(file.protocol).toBe(`${PROTOCOL_MAJOR}.${PROTOCOL_MINOR}`);
    expect(file.protocol).toBe('1.2');
    expect(file.max_frame_len).toBe(MAX_FRAME_LEN);
    expect(file.vectors.length).toBeGreaterThan(0);
  });

  for (const v of file.vectors) {
    it(`${v.kind}: ${v.name}`, () => {
      const value = v.value as Json;
      if (hasUnsafeInteger(value)) {
        // A u64 above 2^53-1: this client refuses it rather than round it.
        expect(() => decoderFor(v.kind)(fromHex(v.hex))).toThrow(/MAX_SAFE_INTEGER/);
        return;
      }
      const c = codecFor(v.kind, value);
      // decode_only: bytes from a newer minor version; encoders write the current one.
      if (!v.decode_only) expect(toHex(c.encode())).toBe(v.hex);
      expect(c.decode(fromHex(v.hex))).toEqual(c.value);
    });
  }

  for (const bad of file.invalid) {
    it(`invalid ${bad.kind}: ${bad.name}`, () => {
      const decode = decoderFor(bad.kind);
      let thrown: unknown = null;
      try {
        decode(fromHex(bad.hex));
      } catch (err) {
        thrown = err;
      }
      expect(thrown, 'decoding must throw').toBeInstanceOf(CodecError);
      expect((thrown as Error).message).toContain(bad.error);
    });
  }
});

// --- the codec's own edge cases -------------------------------------------------------

describe('varints', () => {
  const cases: [number, string][] = [
    [0, '00'],
    [1, '01'],
    [127, '7f'],
    [128, '8001'],
    [300, 'ac02'],
    [16_383, 'ff7f'],
    [16_384, '808001'],
    [2 ** 32 - 1, 'ffffffff0f'],
    [2 ** 32, '8080808010'],
    [2 ** 53 - 1, 'ffffffffffffff0f'],
  ];

  for (const [n, hex] of cases) {
    it(`u64 ${n} <-> ${hex}`, () => {
      expect(toHex(new Writer().u64(n).finish())).toBe(hex);
      const r = new Reader(fromHex(hex));
      expect(r.u64()).toBe(n);
      expect(r.remaining).toBe(0);
    });
    if (n <= 2 ** 32 - 1) {
      it(`u32 ${n} <-> ${hex}`, () => {
        expect(toHex(new Writer().u32(n).finish())).toBe(hex);
        expect(new Reader(fromHex(hex)).u32()).toBe(n);
      });
    }
  }

  it('refuses out-of-range values when encoding', () => {
    expect(() => new Writer().u32(2 ** 32)).toThrow(CodecError);
    expect(() => new Writer().u32(-1)).toThrow(CodecError);
    expect(() => new Writer().u32(1.5)).toThrow(CodecError);
    expect(() => new Writer().u64(2 ** 53)).toThrow(CodecError);
    expect(() => new Writer().u64(Number.NaN)).toThrow(CodecError);
    expect(() => new Writer().u8(256)).toThrow(CodecError);
  });

  it('refuses a u64 above Number.MAX_SAFE_INTEGER when decoding', () => {
    // 2^53
    expect(() => new Reader(fromHex('8080808080808010')).u64()).toThrow(/MAX_SAFE_INTEGER/);
    // u64::MAX
    expect(() => new Reader(fromHex('ffffffffffffffffff01')).u64()).toThrow(/MAX_SAFE_INTEGER/);
  });

  it('refuses varints that overflow their type or never end', () => {
    expect(() => new Reader(fromHex('ffffffff1f')).u32()).toThrow(/overflows 32 bits/);
    expect(() => new Reader(fromHex('ffffffffff01')).u32()).toThrow(/longer than 5 bytes/);
    expect(() => new Reader(fromHex('ffffffffffffffffff02')).u64()).toThrow(/overflows 64 bits/);
    expect(() => new Reader(fromHex('ff')).u32()).toThrow(/unexpected end/);
  });

  it('accepts non-minimal encodings, like postcard', () => {
    expect(new Reader(fromHex('8000')).u32()).toBe(0);
  });
});

describe('primitives', () => {
  it('round-trips strings, bytes, options and bools', () => {
    const w = new Writer()
      .string('')
      .string('\ufeffhé🎉')
      .bytes(Uint8Array.of(0, 255))
      .option<string>(null, (o, v) => o.string(v))
      .option('x', (o, v) => o.string(v))
      .bool(true)
      .bool(false);
    const r = new Reader(w.finish());
    expect(r.string()).toBe('');
    expect(r.string()).toBe('\ufeffhé🎉'); // a leading BOM is kept, not stripped
    expect(r.bytes()).toEqual(Uint8Array.of(0, 255));
    expect(r.option((o) => o.string())).toBeNull();
    expect(r.option((o) => o.string())).toBe('x');
    expect(r.bool()).toBe(true);
    expect(r.bool()).toBe(false);
    expect(r.remaining).toBe(0);
  });

  it('refuses invalid UTF-8, bools, option tags and short input', () => {
    expect(() => new Reader(Uint8Array.of(1, 0xff)).string()).toThrow(/UTF-8/);
    expect(() => new Reader(Uint8Array.of(2, 0xc3)).string()).toThrow(/unexpected end/);
    expect(() => new Reader(Uint8Array.of(2)).bool()).toThrow(/bool/);
    expect(() => new Reader(Uint8Array.of(2)).option((o) => o.u8())).toThrow(/option tag/);
    expect(() => new Reader(Uint8Array.of()).u8()).toThrow(/unexpected end/);
  });

  it('refuses strings with lone surrogates when encoding', () => {
    expect(() => new Writer().string('a\ud800b')).toThrow(CodecError);
  });
});

describe('frames', () => {
  it('encodes a big-endian length then the body', () => {
    expect(toHex(encodeFrame(fromHex('616263')))).toBe('00000003616263');
    expect(toHex(encodeFrame(new Uint8Array(0)))).toBe('00000000');
  });

  it('refuses to encode a body above 1 MiB', () => {
    expect(encodeFrame(new Uint8Array(MAX_FRAME_LEN)).length).toBe(MAX_FRAME_LEN + 4);
    expect(() => encodeFrame(new Uint8Array(MAX_FRAME_LEN + 1))).toThrow(/exceeds the maximum/);
  });

  it('yields frames across split pushes, one byte at a time', () => {
    const stream = new Uint8Array([
      ...encodeFrame(fromHex('07')),
      ...encodeFrame(new Uint8Array(0)),
      ...encodeFrame(new Uint8Array(1000).fill(9)),
    ]);
    const fr = new FrameReader();
    const out: Uint8Array[] = [];
    for (const b of stream) {
      fr.push(Uint8Array.of(b));
      for (let f = fr.next(); f !== null; f = fr.next()) out.push(f);
    }
    fr.finish();
    expect(out).toEqual([fromHex('07'), new Uint8Array(0), new Uint8Array(1000).fill(9)]);
    expect(fr.pending).toBe(0);
  });

  it('yields several frames from one push and keeps bodies independent of later pushes', () => {
    const fr = new FrameReader();
    fr.push(Uint8Array.of(0, 0, 0, 1, 7, 0, 0));
    const first = fr.next();
    expect(first).toEqual(Uint8Array.of(7));
    expect(fr.next()).toBeNull();
    expect(() => fr.finish()).toThrow(/truncated.*\(2 of 4 bytes\)/);
    fr.push(Uint8Array.of(0, 2, 5));
    expect(fr.next()).toBeNull();
    expect(() => fr.finish()).toThrow(/truncated.*\(5 of 6 bytes\)/);
    fr.push(Uint8Array.of(6));
    expect(fr.next()).toEqual(Uint8Array.of(5, 6));
    expect(first).toEqual(Uint8Array.of(7));
    fr.finish();
  });

  it('refuses an oversize length as soon as the 4 prefix bytes are there', () => {
    const fr = new FrameReader();
    fr.push(Uint8Array.of(0x00, 0x10, 0x00));
    expect(fr.next()).toBeNull();
    fr.push(Uint8Array.of(0x01)); // 1 MiB + 1, and no body at all yet
    expect(() => fr.next()).toThrow(/frame of 1048577 bytes exceeds the maximum of 1048576/);
    const small = new FrameReader(10);
    small.push(Uint8Array.of(0, 0, 0, 11));
    expect(() => small.next()).toThrow(/exceeds the maximum of 10/);
  });

  it('accepts exactly the maximum', () => {
    const fr = new FrameReader();
    fr.push(encodeFrame(new Uint8Array(MAX_FRAME_LEN).fill(1)));
    expect(fr.next()?.length).toBe(MAX_FRAME_LEN);
  });

  it('detects truncation at end of stream', () => {
    const fr = new FrameReader();
    fr.finish(); // nothing buffered: a clean end
    fr.push(encodeFrame(fromHex('616263')).subarray(0, 5));
    expect(fr.next()).toBeNull();
    expect(() => fr.finish()).toThrow(CodecError);
    expect(() => fr.finish()).toThrow(/truncated/);
  });
});

describe('headers', () => {
  const open = { deviceId: 'd1', kind: 'Action' as const, token: 't', e2e: null };

  it('encodes an open header exactly like the Rust side', () => {
    expect(toHex(encodeOpenHeader(open))).toBe('0102026431000174' + '00');
  });

  it('refuses another major version with the version in the message', () => {
    expect(() => decodeOpenHeader(Uint8Array.of(2, 7, 0xff))).toThrow(
      /unsupported protocol version 2\.7/,
    );
    expect(() => decodeHello(Uint8Array.of(0, 1))).toThrow(/unsupported protocol version 0\.1/);
    expect(() => decodeOpenHeader(Uint8Array.of(1))).toThrow(/too short/);
  });

  it('ignores fields appended by a newer minor version', () => {
    const body = encodeOpenHeader(open);
    body[1] = 9;
    const newer = new Uint8Array([...body, 42, 42, 42]);
    expect(decodeOpenHeader(newer)).toEqual(open);
    expect(decodeHeaderVersion(newer)).toEqual({ major: 1, minor: 9 });
  });

  it('reports every truncation of a header as malformed', () => {
    const body = encodeOpenHeader({ ...open, e2e: Uint8Array.of(1, 2) });
    for (let cut = 2; cut < body.length; cut++) {
      expect(() => decodeOpenHeader(body.subarray(0, cut)), `cut at ${cut}`).toThrow(
        /^malformed stream-open header: /,
      );
    }
  });

  it('round-trips relay headers and hellos', () => {
    const relay = { userId: 'u', sessionId: 2 ** 40, kind: 'Control' as const, e2e: Uint8Array.of(9) };
    expect(decodeRelayHeader(encodeRelayHeader(relay))).toEqual(relay);
    const hello = { deviceToken: 'tok', nodeVersion: '1.2.3', identityKey: new Uint8Array(32).fill(4) };
    expect(decodeHello(encodeHello(hello))).toEqual(hello);
  });

  it('refuses an unknown stream kind', () => {
    expect(() => decodeOpenHeader(Uint8Array.of(1, 0, 0, 5, 0, 0))).toThrow(
      /malformed stream-open header: unknown stream kind 5/,
    );
  });
});

describe('envelopes', () => {
  it('encodes a chunk exactly like the Rust side', () => {
    const env: Envelope = { requestId: 300, deviceId: '', body: { type: 'StreamChunk', seq: 1, data: 'hi' } };
    expect(toHex(encodeEnvelope(env))).toBe('ac0200040102' + '6869');
  });

  it('round-trips every message type', () => {
    const bodies: Body[] = [
      { type: 'ExecuteAction', appId: 'hello-ai', action: 'write', payload: '{"topic":"x"}' },
      { type: 'InstallApp', appId: 'a', version: null },
      { type: 'InstallApp', appId: 'a', version: '1.0.0' },
      { type: 'UninstallApp', appId: 'a' },
      { type: 'GetStatus' },
      { type: 'StreamChunk', seq: 2 ** 32 - 1, data: 'ü' },
      { type: 'StreamEnd', chunks: 3, elapsedMs: 1234 },
      { type: 'Error', code: 'cancelled', message: 'stopped' },
      { type: 'DeviceStatus', online: true, nodeVersion: '0.1.0', apps: [{ id: 'a', version: '1', enabled: false }] },
      { type: 'Cancel' },
      { type: 'Ping', nonce: Number.MAX_SAFE_INTEGER },
      { type: 'Pong', nonce: 0 },
      { type: 'Welcome', deviceId: 'd', version: { major: 1, minor: 0 }, heartbeatSecs: 15 },
      { type: 'StatusSnapshotEnd', devices: 0 },
      { type: 'StatusSnapshotEnd', devices: 2 ** 32 - 1 },
    ];
    bodies.forEach((body, i) => {
      const env: Envelope = { requestId: i, deviceId: 'dev', body };
      expect(decodeEnvelope(encodeEnvelope(env))).toEqual(env);
    });
  });

  it('numbers message types 0..12 in order', () => {
    const typeByte = (body: Body): number | undefined => encodeEnvelope({ requestId: 0, deviceId: '', body })[2];
    expect(typeByte({ type: 'ExecuteAction', appId: '', action: '', payload: '' })).toBe(0);
    expect(typeByte({ type: 'GetStatus' })).toBe(3);
    expect(typeByte({ type: 'StreamChunk', seq: 0, data: '' })).toBe(4);
    expect(typeByte({ type: 'Error', code: '', message: '' })).toBe(6);
    expect(typeByte({ type: 'Cancel' })).toBe(8);
    expect(typeByte({ type: 'Welcome', deviceId: '', version: { major: 1, minor: 0 }, heartbeatSecs: 0 })).toBe(11);
    expect(typeByte({ type: 'StatusSnapshotEnd', devices: 0 })).toBe(12);
  });

  it('writes headers with protocol version 1.2', () => {
    const body = encodeOpenHeader({ deviceId: 'd', kind: 'Action', token: 't', e2e: null });
    expect([body[0], body[1]]).toEqual([1, 2]);
  });

  it('reads 1.1 messages without the fields 1.2 appended, and writes them for 1.2', () => {
    // A 1.1 browser's EXECUTE_ACTION ends after the payload: no model.
    const run = decodeEnvelope(Uint8Array.of(3, 0, 0, 1, 0x61, 1, 0x77, 2, 0x7b, 0x7d));
    expect(run.body).toEqual({ type: 'ExecuteAction', appId: 'a', action: 'w', payload: '{}' });
    // The same with a model: one option byte and the string.
    const withModel: Envelope = {
      requestId: 3,
      deviceId: '',
      body: { type: 'ExecuteAction', appId: 'a', action: 'w', payload: '{}', model: 'm2' },
    };
    expect(toHex(encodeEnvelope(withModel))).toBe('030000' + '0161' + '0177' + '027b7d' + '01026d32');
    expect(decodeEnvelope(encodeEnvelope(withModel))).toEqual(withModel);
    // A 1.1 desktop's DEVICE_STATUS ends after the apps: no providers, no unloadable apps.
    const status = decodeEnvelope(Uint8Array.of(4, 0, 7, 1, 1, 0x78, 0));
    expect(status.body).toEqual({ type: 'DeviceStatus', online: true, nodeVersion: 'x', apps: [] });
    const full: Envelope = {
      requestId: 4,
      deviceId: '',
      body: {
        type: 'DeviceStatus',
        online: true,
        nodeVersion: 'x',
        apps: [],
        providers: [{ name: 'openai', models: ['a', 'b'], configured: true }],
        unloadable: [{ id: 'js', version: '1.0.0', reason: 'no runtime' }],
      },
    };
    expect(decodeEnvelope(encodeEnvelope(full))).toEqual(full);
    // Cut inside the providers list: malformed, not "absent".
    const bytes = encodeEnvelope(full);
    expect(() => decodeEnvelope(bytes.slice(0, 12))).toThrow(/malformed envelope/);
  });

  it('refuses an unknown message type', () => {
    expect(() => decodeEnvelope(Uint8Array.of(1, 0, 99))).toThrow(
      'malformed envelope: unknown message type 99',
    );
    // 19–24 are the file messages (1.2); 25 is the first type this client does not know.
    expect(() => decodeEnvelope(Uint8Array.of(1, 0, 25))).toThrow(/unknown message type 25/);
  });

  it('refuses invalid UTF-8 and truncated bodies', () => {
    expect(() => decodeEnvelope(Uint8Array.of(1, 0, 4, 0, 1, 0xff))).toThrow(/^malformed envelope: .*UTF-8/);
    const full = encodeEnvelope({ requestId: 1, deviceId: 'd', body: { type: 'StreamEnd', chunks: 300, elapsedMs: 5 } });
    for (let cut = 0; cut < full.length; cut++) {
      expect(() => decodeEnvelope(full.subarray(0, cut)), `cut at ${cut}`).toThrow(/^malformed envelope/);
    }
  });

  it('ignores trailing bytes of a newer minor version', () => {
    const env: Envelope = { requestId: 1, deviceId: '', body: { type: 'Cancel' } };
    expect(decodeEnvelope(new Uint8Array([...encodeEnvelope(env), 1, 2, 3]))).toEqual(env);
  });
});
