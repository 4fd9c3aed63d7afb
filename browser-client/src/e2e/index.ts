/**
 * End-to-end encryption of one action stream, the browser's side (and, for tests, the
 * desktop's response sealer). The same construction as the Rust crate `aisa-crypto`
 * (`crypto/src/e2e.rs`), byte for byte; `docs/e2e.md` describes it:
 *
 *   request = 0x01 || enc (32) || ts (u64 BE) || HPKE-seal(aad = 0x01 || ts, request)
 *   HPKE: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, mode auth,
 *         info = "aisa-e2e-v1" || 0x00 || caller info
 *   secret = Export("aisa-e2e response", 32); prk = HKDF-Extract(salt = enc, secret)
 *   key = HKDF-Expand(prk, "aisa-e2e key", 32); base = HKDF-Expand(prk, "aisa-e2e nonce", 12)
 *   chunk i = flag (0 more | 1 final) || len (u32 BE) || ChaCha20-Poly1305(key, base ^ i,
 *             aad = "" | "final", data)
 *
 * HPKE comes from `@hpke/core` with `@hpke/dhkem-x25519` and `@hpke/chacha20poly1305`.
 */

import { Chacha20Poly1305 } from '@hpke/chacha20poly1305';
import { CipherSuite, DhkemX25519HkdfSha256 as NativeX25519, type SenderContext } from '@hpke/core';
import { DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/dhkem-x25519';

/** The version byte that starts a sealed request. */
export const VERSION = 1;
/** Bytes before the ciphertext of a sealed request. */
export const REQUEST_HEADER_LEN = 1 + 32 + 8;
/** The largest chunk plaintext accepted. */
export const MAX_CHUNK = 1 << 20;

const text = new TextEncoder();
const INFO_LABEL = text.encode('aisa-e2e-v1\0');
const EXPORT_LABEL = text.encode('aisa-e2e response');
const KEY_LABEL = text.encode('aisa-e2e key');
const NONCE_LABEL = text.encode('aisa-e2e nonce');
const FINAL_AAD = text.encode('final');
const EMPTY = new Uint8Array(0);
const REORDER_PROBE = 8;

/** Why a message was refused; `code` tells the cases apart (as the Rust `E2eError`). */
export class E2eError extends Error {
  constructor(
    readonly code:
      | 'malformed'
      | 'bad_key'
      | 'request_rejected'
      | 'out_of_order'
      | 'chunk_rejected'
      | 'after_final'
      | 'truncated'
      | 'too_large',
    message: string,
  ) {
    super(message);
    this.name = 'E2eError';
  }
}

/** The suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305. `native`
 * takes X25519 from WebCrypto (for non-extractable keys, see keystore.ts) instead of
 * `@hpke/dhkem-x25519`; the bytes are the same. */
export function suite(native = false): CipherSuite {
  return new CipherSuite({
    kem: native ? new NativeX25519() : new DhkemX25519HkdfSha256(),
    kdf: new HkdfSha256(),
    aead: new Chacha20Poly1305(),
  });
}

/** Whether a key pair is WebCrypto's own X25519 (as keystore.ts makes where it can). */
function isNative(key: CryptoKeyPair): boolean {
  return typeof CryptoKey !== 'undefined' && key.privateKey instanceof CryptoKey && key.privateKey.algorithm.name === 'X25519';
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function requestAad(ts: bigint): Uint8Array {
  const aad = new Uint8Array(9);
  aad[0] = VERSION;
  new DataView(aad.buffer).setBigUint64(1, ts);
  return aad;
}

/** A browser's static key pair, from its raw 32-byte secret and public keys. */
export async function importKeyPair(secret: Uint8Array, publicKey: Uint8Array): Promise<CryptoKeyPair> {
  const kem = suite().kem;
  return {
    privateKey: await kem.deserializePrivateKey(secret),
    publicKey: await kem.deserializePublicKey(publicKey),
  };
}

async function hkdf(secret: Uint8Array, salt: Uint8Array, info: Uint8Array, bytes: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey('raw', secret as BufferSource, 'HKDF', false, ['deriveBits']);
  const bits = await crypto.subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: salt as BufferSource, info: info as BufferSource },
    key,
    bytes * 8,
  );
  return new Uint8Array(bits);
}

class ChunkKeys {
  private constructor(
    private readonly aead: ReturnType<Chacha20Poly1305['createEncryptionContext']>,
    private readonly base: Uint8Array,
  ) {}

  static async derive(exported: Uint8Array, enc: Uint8Array): Promise<ChunkKeys> {
    const key = await hkdf(exported, enc, KEY_LABEL, 32);
    const base = await hkdf(exported, enc, NONCE_LABEL, 12);
    return new ChunkKeys(new Chacha20Poly1305().createEncryptionContext(key.buffer as ArrayBuffer), base);
  }

  nonce(counter: number): Uint8Array {
    const n = this.base.slice();
    const c = new Uint8Array(8);
    new DataView(c.buffer).setBigUint64(0, BigInt(counter));
    for (let i = 0; i < 8; i++) n[4 + i]! ^= c[i]!;
    return n;
  }

  async seal(counter: number, last: boolean, data: Uint8Array): Promise<Uint8Array> {
    return new Uint8Array(await this.aead.seal(this.nonce(counter), data, last ? FINAL_AAD : EMPTY));
  }

  async open(counter: number, last: boolean, ct: Uint8Array): Promise<Uint8Array | null> {
    try {
      return new Uint8Array(await this.aead.open(this.nonce(counter), ct, last ? FINAL_AAD : EMPTY));
    } catch {
      return null;
    }
  }
}

/** The length of the whole chunk at the start of `buf`, or null when more bytes are needed. */
export function chunkLength(buf: Uint8Array): number | null {
  if (buf.length < 5) return null;
  const len = new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(1);
  if (len > MAX_CHUNK + 16) throw new E2eError('too_large', 'chunk too large');
  if (buf[0]! > 1 || len < 16) throw new E2eError('malformed', 'malformed chunk');
  return buf.length >= 5 + len ? 5 + len : null;
}

/** Opens the response chunks of one stream, in order. */
export class ResponseOpener {
  private next = 0;
  private done = false;

  /** @internal */
  constructor(private readonly keys: ChunkKeys) {}

  /** Opens one whole chunk; returns its data and whether it was the final one. */
  async openChunk(chunk: Uint8Array): Promise<{ data: Uint8Array; last: boolean }> {
    if (this.done) throw new E2eError('after_final', 'data after the final chunk');
    if (chunkLength(chunk) !== chunk.length) throw new E2eError('malformed', 'malformed chunk');
    const last = chunk[0] === 1;
    const ct = chunk.subarray(5);
    const data = await this.keys.open(this.next, last, ct);
    if (data) {
      this.next += 1;
      this.done = last;
      return { data, last };
    }
    for (let found = Math.max(0, this.next - REORDER_PROBE); found < this.next + REORDER_PROBE; found++) {
      if (found !== this.next && (await this.keys.open(found, last, ct))) {
        throw new E2eError('out_of_order', `chunk out of order: expected ${this.next}, got ${found}`);
      }
    }
    throw new E2eError('chunk_rejected', 'chunk does not authenticate (altered or wrong key)');
  }

  /** Call at the end of the stream: refuses a response without its final chunk. */
  finish(): void {
    if (!this.done) throw new E2eError('truncated', 'the response was truncated (no final chunk)');
  }

  /** Whether the final chunk arrived. */
  get finished(): boolean {
    return this.done;
  }
}

/** Seals response chunks in order (the desktop's role; here for tests and vectors). */
export class ResponseSealer {
  private next = 0;
  private done = false;

  /** @internal */
  constructor(private readonly keys: ChunkKeys) {}

  /** Seals the next chunk; `last` marks the final one. */
  async sealChunk(data: Uint8Array, last: boolean): Promise<Uint8Array> {
    if (this.done) throw new E2eError('after_final', 'data after the final chunk');
    if (data.length > MAX_CHUNK) throw new E2eError('too_large', 'chunk too large');
    const ct = await this.keys.seal(this.next, last, data);
    this.next += 1;
    this.done = last;
    const head = new Uint8Array(5);
    head[0] = last ? 1 : 0;
    new DataView(head.buffer).setUint32(1, ct.length);
    return concat(head, ct);
  }
}

async function keysOf(ctx: { export(c: Uint8Array, len: number): Promise<ArrayBuffer> }, enc: Uint8Array) {
  const exported = new Uint8Array(await ctx.export(EXPORT_LABEL, 32));
  return ChunkKeys.derive(exported, enc);
}

/**
 * Seals `request` for the desktop public key `desktopPk`, authenticated with the
 * browser's static key pair, stamped `nowUnix` (seconds). `ikmE` fixes the ephemeral
 * key for test vectors only (never in use: reusing it breaks confidentiality).
 */
export async function sealRequest(
  desktopPk: Uint8Array,
  browserKey: CryptoKeyPair,
  info: Uint8Array,
  request: Uint8Array,
  nowUnix: number,
  ikmE?: Uint8Array,
): Promise<{ sealed: Uint8Array; opener: ResponseOpener }> {
  const s = suite(isNative(browserKey));
  let recipientPublicKey: CryptoKey;
  try {
    recipientPublicKey = await s.kem.deserializePublicKey(desktopPk);
  } catch {
    throw new E2eError('bad_key', 'invalid desktop key');
  }
  const ctx: SenderContext = await s.createSenderContext({
    recipientPublicKey,
    senderKey: browserKey,
    info: concat(INFO_LABEL, info),
    ...(ikmE ? { ekm: ikmE } : {}),
  });
  const ts = BigInt(nowUnix);
  const enc = new Uint8Array(ctx.enc);
  const ct = new Uint8Array(await ctx.seal(request, requestAad(ts)));
  const tsBytes = new Uint8Array(8);
  new DataView(tsBytes.buffer).setBigUint64(0, ts);
  const sealed = concat(Uint8Array.of(VERSION), enc, tsBytes, ct);
  return { sealed, opener: new ResponseOpener(await keysOf(ctx, enc)) };
}

/**
 * Opens a sealed request as the desktop does (without its replay memory, which lives
 * in the desktop node): for tests of the TypeScript side against itself.
 */
export async function openRequest(
  desktopKey: CryptoKeyPair,
  browserPk: Uint8Array,
  info: Uint8Array,
  sealed: Uint8Array,
): Promise<{ request: Uint8Array; sealer: ResponseSealer }> {
  if (sealed.length < REQUEST_HEADER_LEN + 16 || sealed[0] !== VERSION) {
    throw new E2eError('malformed', 'malformed request');
  }
  const s = suite();
  const enc = sealed.slice(1, 33);
  const ts = new DataView(sealed.buffer, sealed.byteOffset + 33, 8).getBigUint64(0);
  try {
    const ctx = await s.createRecipientContext({
      recipientKey: desktopKey,
      enc,
      info: concat(INFO_LABEL, info),
      senderPublicKey: await s.kem.deserializePublicKey(browserPk),
    });
    const request = new Uint8Array(await ctx.open(sealed.subarray(REQUEST_HEADER_LEN), requestAad(ts)));
    return { request, sealer: new ResponseSealer(await keysOf(ctx, enc)) };
  } catch {
    throw new E2eError('request_rejected', 'the request does not authenticate (wrong key or altered)');
  }
}
