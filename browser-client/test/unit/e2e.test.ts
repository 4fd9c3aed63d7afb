/**
 * End-to-end encryption in TypeScript: RFC 9180's vectors for our suite (through
 * @hpke/*), and interoperation with the Rust crate both ways:
 *
 * - Rust → TS: `crypto/vectors/e2e-vectors.json` (written by `crypto/tests/vectors.rs`):
 *   TS seals the same request with the same keys and ephemeral IKM and must produce
 *   Rust's bytes exactly, and TS opens the response chunks Rust sealed.
 * - TS → Rust: this test writes `crypto/vectors/e2e-from-ts.json` (a request and chunks
 *   TS sealed); the Rust test `request_sealed_by_typescript_opens_in_rust` opens the
 *   request with the desktop's code and checks that Rust seals the same chunks.
 */

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

import {
  E2eError,
  ResponseOpener,
  importKeyPair,
  openRequest,
  sealRequest,
  suite,
} from '../../src/e2e/index';
import { fromHex, toHex } from '../../src/tunnel/codec';

const here = dirname(fileURLToPath(import.meta.url));
const vectorsDir = resolve(here, '../../../crypto/vectors');

function load(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(resolve(vectorsDir, name), 'utf8')) as Record<string, unknown>;
}

function hexField(o: unknown, field: string): Uint8Array {
  const v = (o as Record<string, unknown>)[field];
  if (typeof v !== 'string') throw new Error(`field ${field}`);
  return fromHex(v);
}

async function publicOf(kp: CryptoKeyPair): Promise<Uint8Array> {
  return new Uint8Array(await suite().kem.serializePublicKey(kp.publicKey));
}

describe('RFC 9180 vectors, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305', () => {
  const file = load('rfc9180-x25519-sha256-chacha20poly1305.json');
  const vectors = file['vectors'] as Record<string, unknown>[];

  it('has the base and auth entries', () => {
    expect(vectors.map((v) => v['mode'])).toEqual([0, 2]);
  });

  for (const v of vectors) {
    it(`${String(v['section'])} (mode ${String(v['mode'])})`, async () => {
      const s = suite();
      const info = hexField(v, 'info');
      const recipient = await s.kem.deriveKeyPair(hexField(v, 'ikmR'));
      expect(toHex(await publicOf(recipient))).toBe(v['pkRm']);
      const sender = v['mode'] === 2 ? await s.kem.deriveKeyPair(hexField(v, 'ikmS')) : undefined;
      if (sender) expect(toHex(await publicOf(sender))).toBe(v['pkSm']);

      const sctx = await s.createSenderContext({
        recipientPublicKey: recipient.publicKey,
        info,
        ekm: hexField(v, 'ikmE'),
        ...(sender ? { senderKey: sender } : {}),
      });
      expect(toHex(new Uint8Array(sctx.enc))).toBe(v['enc']);
      const rctx = await s.createRecipientContext({
        recipientKey: await s.kem.deserializePrivateKey(hexField(v, 'skRm')),
        enc: hexField(v, 'enc'),
        info,
        ...(sender ? { senderPublicKey: sender.publicKey } : {}),
      });
      for (const e of v['encryptions'] as Record<string, unknown>[]) {
        const ct = new Uint8Array(await sctx.seal(hexField(e, 'plaintext'), hexField(e, 'aad')));
        expect(toHex(ct)).toBe(e['ciphertext']);
        const pt = new Uint8Array(await rctx.open(hexField(e, 'ciphertext'), hexField(e, 'aad')));
        expect(toHex(pt)).toBe(e['plaintext']);
      }
      for (const x of v['exports'] as Record<string, unknown>[]) {
        const ctxInfo = hexField(x, 'exporter_context');
        const len = x['L'] as number;
        expect(toHex(new Uint8Array(await sctx.export(ctxInfo, len)))).toBe(x['exported_value']);
        expect(toHex(new Uint8Array(await rctx.export(ctxInfo, len)))).toBe(x['exported_value']);
      }
    });
  }
});

describe('interop with the Rust crate (crypto/vectors/e2e-vectors.json)', () => {
  const v = load('e2e-vectors.json');
  const chunks = v['chunks'] as { data: string; last: boolean; sealed: string }[];

  async function browserSeal(): Promise<{ sealed: Uint8Array; opener: ResponseOpener }> {
    const browser = await importKeyPair(hexField(v, 'browser_sk'), hexField(v, 'browser_pk'));
    return sealRequest(
      hexField(v, 'desktop_pk'),
      browser,
      hexField(v, 'info'),
      hexField(v, 'request'),
      v['ts'] as number,
      hexField(v, 'ikm_e'),
    );
  }

  it('seals the request to exactly the bytes Rust sealed', async () => {
    const { sealed } = await browserSeal();
    expect(toHex(sealed)).toBe(v['sealed_request']);
  });

  it('opens the response chunks Rust sealed', async () => {
    const { opener } = await browserSeal();
    for (const c of chunks) {
      const { data, last } = await opener.openChunk(fromHex(c.sealed));
      expect(toHex(data)).toBe(c.data);
      expect(last).toBe(c.last);
    }
    opener.finish();
  });

  it('opens the request Rust sealed, as a desktop would', async () => {
    const desktop = await importKeyPair(hexField(v, 'desktop_sk'), hexField(v, 'desktop_pk'));
    const { request } = await openRequest(desktop, hexField(v, 'browser_pk'), hexField(v, 'info'), hexField(v, 'sealed_request'));
    expect(toHex(request)).toBe(v['request']);
  });

  it('refuses truncated, reordered, tampered and foreign chunks with distinct errors', async () => {
    const code = async (p: Promise<unknown>) => {
      try {
        await p;
        return 'ok';
      } catch (e) {
        return e instanceof E2eError ? e.code : String(e);
      }
    };
    const [c0, c1, c2] = chunks.map((c) => fromHex(c.sealed)) as [Uint8Array, Uint8Array, Uint8Array];
    const { opener } = await browserSeal();
    expect(await code(opener.openChunk(c1))).toBe('out_of_order');
    const bad = c0.slice();
    bad[bad.length - 1]! ^= 1;
    expect(await code(opener.openChunk(bad))).toBe('chunk_rejected');
    await opener.openChunk(c0);
    await opener.openChunk(c1);
    expect(() => opener.finish()).toThrow(/truncated/);
    // A chunk of another stream (another ephemeral key, so other chunk keys).
    const browser = await importKeyPair(hexField(v, 'browser_sk'), hexField(v, 'browser_pk'));
    const other = await sealRequest(hexField(v, 'desktop_pk'), browser, hexField(v, 'info'), hexField(v, 'request'), 1);
    expect(await code(other.opener.openChunk(c0))).toBe('chunk_rejected');
    await opener.openChunk(c2);
    opener.finish();
    expect(await code(opener.openChunk(c2))).toBe('after_final');
  });

  it('a request from another browser key does not open', async () => {
    const desktop = await importKeyPair(hexField(v, 'desktop_sk'), hexField(v, 'desktop_pk'));
    await expect(
      openRequest(desktop, hexField(v, 'desktop_pk'), hexField(v, 'info'), hexField(v, 'sealed_request')),
    ).rejects.toThrow(/does not authenticate/);
  });
});

describe('TS → Rust vector (crypto/vectors/e2e-from-ts.json)', () => {
  it('is current (UPDATE_VECTORS=1 rewrites it)', async () => {
    const rust = load('e2e-vectors.json');
    const browser = await importKeyPair(hexField(rust, 'browser_sk'), hexField(rust, 'browser_pk'));
    const desktop = await importKeyPair(hexField(rust, 'desktop_sk'), hexField(rust, 'desktop_pk'));
    const info = new TextEncoder().encode('device-from-typescript');
    const request = new TextEncoder().encode('{"type":"EXECUTE_ACTION","app_id":"hello-ai","action":"echo","payload":{"text":"from TS"}}');
    const ts = 1_790_000_100;
    const ikmE = new Uint8Array(32).fill(0x43);
    const { sealed } = await sealRequest(hexField(rust, 'desktop_pk'), browser, info, request, ts, ikmE);
    const { sealer } = await openRequest(desktop, hexField(rust, 'browser_pk'), info, sealed);
    const parts: [string, boolean][] = [['Echo: ', false], ['from TS', false], ['', true]];
    const chunks = [];
    for (const [data, last] of parts) {
      const bytes = new TextEncoder().encode(data);
      chunks.push({ data: toHex(bytes), last, sealed: toHex(await sealer.sealChunk(bytes, last)) });
    }
    const out = {
      description:
        'aisa e2e request and response chunks sealed by the TypeScript side (browser-client/test/unit/e2e.test.ts, fixed ephemeral IKM 0x43…); crypto/tests/vectors.rs opens the request with the desktop code and seals the same chunks. Hex strings.',
      desktop_sk: rust['desktop_sk'],
      browser_pk: rust['browser_pk'],
      info: toHex(info),
      ts,
      request: toHex(request),
      sealed_request: toHex(sealed),
      chunks,
    };
    const fresh = JSON.stringify(out, null, 2) + '\n';
    const path = resolve(vectorsDir, 'e2e-from-ts.json');
    if (process.env['UPDATE_VECTORS'] || !existsSync(path)) {
      writeFileSync(path, fresh);
    } else {
      expect(readFileSync(path, 'utf8')).toBe(fresh);
    }
  });
});
