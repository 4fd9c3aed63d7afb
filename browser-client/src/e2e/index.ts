/**
 * End-to-end encryption of one action stream, the browser's side (and, for tests, the
 * desktop's response sealer). The same construction as the Rust crate `aisa-crypto`
 * (`crypto/src/e2e.rs`), byte for byte; `docs/e2e.md` describes it:
 *
 *   request = 0x02 || enc (32) || ts (u64 BE) || HPKE-seal(aad = 0x02 || ts, request)
 *   HPKE: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, mode auth,
 *         info = "aisa-e2e-v2" || 0x00 || caller info
 *   control = HPKE-seal(aad = "control", message)    (the request's context, sequence 1, 2, …)
 *   secret = Export("aisa-e2e response", 32); response_nonce = random(32) (the desktop's)
 *   prk = HKDF-Extract(salt = enc || response_nonce, secret)       (plain RFC 5869)
 *   key = HKDF-Expand(prk, "aisa-e2e key", 32); base = HKDF-Expand(prk, "aisa-e2e nonce", 12)
 *   chunk i = type (0x02 more | 0x03 final) || len (u32 BE) || ChaCha20-Poly1305(key,
 *             base ^ i, aad = "" | "final", data)
 *   answer frames: 0x01 || response_nonce || chunk 0, then chunk 1, 2, … one per frame;
 *   or, instead, one plain refusal (first byte 0x00)
 *
 * HPKE comes from `@hpke/core` with `@hpke/dhkem-x25519` and `@hpke/chacha20poly1305`.
 */

import { Chacha20Poly1305 } from '@hpke/chacha20poly1305';
import { CipherSuite, DhkemX25519HkdfSha256 as NativeX25519, type SenderContext } from '@hpke/core';
import { DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/dhkem-x25519';

/** The version byte that starts a sealed request. */
export const VERSION = 2;
/** Bytes before the ciphertext of a sealed request. */
export const REQUEST_HEADER_LEN = 1 + 32 + 8;
/** Bytes of the desktop's responder nonce. */
export const RESPONSE_NONCE_LEN = 32;
/** Bytes a chunk adds to its data: type, length, tag. */
export const CHUNK_OVERHEAD = 1 + 4 + 16;
/** Bytes the first sealed frame carries before its chunk: type, responder nonce. */
export const START_OVERHEAD = 1 + RESPONSE_NONCE_LEN;
/** The largest frame body (the tunnel's limit, 1 MiB). */
export const MAX_FRAME = 1 << 20;
/** The largest chunk plaintext: any sealed frame, the first included, fits one frame. */
export const MAX_CHUNK = MAX_FRAME - START_OVERHEAD - CHUNK_OVERHEAD;
/** First byte of a plain frame (an envelope with request id 0): a refusal. */
export const FRAME_PLAIN = 0x00;
/** First byte of the first sealed frame: the responder nonce, then chunk 0. */
export const FRAME_START = 0x01;
/** First byte of a sealed chunk after which more follow. */
export const FRAME_CHUNK = 0x02;
/** First byte of the final sealed chunk. */
export const FRAME_FINAL = 0x03;

const text = new TextEncoder();
const INFO_LABEL = text.encode('aisa-e2e-v2\0');
const EXPORT_LABEL = text.encode('aisa-e2e response');
const KEY_LABEL = text.encode('aisa-e2e key');
const NONCE_LABEL = text.encode('aisa-e2e nonce');
const FINAL_AAD = text.encode('final');
const CONTROL_AAD = text.encode('control');
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
      | 'unsealed'
      | 'control_rejected'
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

  static async derive(exported: Uint8Array, enc: Uint8Array, responseNonce: Uint8Array): Promise<ChunkKeys> {
    const salt = concat(enc, responseNonce);
    const key = await hkdf(exported, salt, KEY_LABEL, 32);
    const base = await hkdf(exported, salt, NONCE_LABEL, 12);
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
  if ((buf[0] !== FRAME_CHUNK && buf[0] !== FRAME_FINAL) || len < 16) throw new E2eError('malformed', 'malformed chunk');
  return buf.length >= 5 + len ? 5 + len : null;
}

/** One answer frame of an encrypted stream, as {@link ResponseOpener.openFrame} read it. */
export type ResponseFrame = { kind: 'plain'; body: Uint8Array } | { kind: 'data'; data: Uint8Array; last: boolean };

/** The browser's side of one encrypted stream: seals control messages (CANCEL) to the
 * desktop and opens the answer frames in order. */
export class ResponseOpener {
  private keys: ChunkKeys | null = null;
  private next = 0;
  private done = false;

  /** @internal */
  constructor(
    private readonly ctx: SenderContext,
    private readonly secret: Uint8Array,
    private readonly enc: Uint8Array,
  ) {}

  /** Seals the next control message (an encoded envelope, e.g. CANCEL) for the desktop. */
  async sealControl(message: Uint8Array): Promise<Uint8Array> {
    return new Uint8Array(await this.ctx.seal(message as BufferSource, CONTROL_AAD as BufferSource));
  }

  /**
   * Reads one answer frame: a plain refusal (first byte 0x00) as the first frame only,
   * else sealed chunks. A plain frame after the first sealed one was injected on the
   * way: `unsealed`.
   */
  async openFrame(frame: Uint8Array): Promise<ResponseFrame> {
    if (this.done) throw new E2eError('after_final', 'data after the final chunk');
    if (frame[0] === FRAME_PLAIN) {
      if (this.keys) throw new E2eError('unsealed', 'a plain frame inside the sealed answer (injected on the way)');
      this.done = true;
      return { kind: 'plain', body: frame };
    }
    const { data, last } = await this.openChunk(frame);
    return { kind: 'data', data, last };
  }

  /** Opens one sealed frame (the first starts with 0x01 and the responder nonce); returns
   * its data and whether it was the final chunk. */
  async openChunk(frame: Uint8Array): Promise<{ data: Uint8Array; last: boolean }> {
    if (this.done) throw new E2eError('after_final', 'data after the final chunk');
    // The first frame's keys are kept only once that frame authenticates, so a forged
    // first frame leaves no state behind and the genuine one still opens.
    let chunk = frame;
    let fresh: ChunkKeys | null = null;
    if (frame[0] === FRAME_START && !this.keys) {
      if (frame.length < START_OVERHEAD) throw new E2eError('malformed', 'malformed first frame');
      chunk = frame.subarray(START_OVERHEAD);
      if (chunkLength(chunk) !== chunk.length) throw new E2eError('malformed', 'malformed chunk');
      fresh = await ChunkKeys.derive(this.secret, this.enc, frame.subarray(1, START_OVERHEAD));
    } else if (frame[0] === FRAME_PLAIN && this.keys) {
      throw new E2eError('unsealed', 'a plain frame inside the sealed answer (injected on the way)');
    } else if (!this.keys || (frame[0] !== FRAME_CHUNK && frame[0] !== FRAME_FINAL)) {
      throw new E2eError('malformed', 'malformed answer frame');
    }
    const keys = (fresh ?? this.keys)!;
    if (chunkLength(chunk) !== chunk.length) throw new E2eError('malformed', 'malformed chunk');
    const last = chunk[0] === FRAME_FINAL;
    const ct = chunk.subarray(5);
    const data = await keys.open(this.next, last, ct);
    if (data) {
      if (fresh) this.keys = fresh;
      this.next += 1;
      this.done = last;
      return { data, last };
    }
    for (let found = Math.max(0, this.next - REORDER_PROBE); found < this.next + REORDER_PROBE; found++) {
      if (found !== this.next && (await keys.open(found, last, ct))) {
        throw new E2eError('out_of_order', `chunk out of order: expected ${this.next}, got ${found}`);
      }
    }
    throw new E2eError('chunk_rejected', 'chunk does not authenticate (altered or wrong key)');
  }

  /** Call at the end of the stream: refuses an answer without its final chunk (a plain refusal is complete). */
  finish(): void {
    if (!this.done) throw new E2eError('truncated', 'the response was truncated (no final chunk)');
  }

  /** Whether the final sealed chunk arrived. */
  get finished(): boolean {
    return this.done && this.keys !== null;
  }
}

/** Seals response chunks in order (the desktop's role; here for tests and vectors). */
export class ResponseSealer {
  private next = 0;
  private done = false;

  /** @internal */
  constructor(
    private readonly keys: ChunkKeys,
    private readonly responseNonce: Uint8Array,
  ) {}

  /** Seals the next chunk as one frame body (the first preceded by 0x01 and the responder nonce); `last` marks the final one. */
  async sealChunk(data: Uint8Array, last: boolean): Promise<Uint8Array> {
    if (this.done) throw new E2eError('after_final', 'data after the final chunk');
    if (data.length > MAX_CHUNK) throw new E2eError('too_large', 'chunk too large');
    const ct = await this.keys.seal(this.next, last, data);
    this.next += 1;
    this.done = last;
    const head = new Uint8Array(5);
    head[0] = last ? FRAME_FINAL : FRAME_CHUNK;
    new DataView(head.buffer).setUint32(1, ct.length);
    return this.next === 1 ? concat(Uint8Array.of(FRAME_START), this.responseNonce, head, ct) : concat(head, ct);
  }
}

/** Opens the browser's sealed control messages (the desktop's role; for tests and vectors). */
export class ControlOpener {
  /** @internal */
  constructor(private readonly ctx: { open(ct: BufferSource, aad: BufferSource): Promise<ArrayBuffer> }) {}

  /** Opens the next control message; one that does not open is `control_rejected`. */
  async open(frame: Uint8Array): Promise<Uint8Array> {
    try {
      return new Uint8Array(await this.ctx.open(frame as BufferSource, CONTROL_AAD as BufferSource));
    } catch {
      throw new E2eError('control_rejected', 'the control message does not authenticate');
    }
  }
}

async function exportedSecret(ctx: { export(c: Uint8Array, len: number): Promise<ArrayBuffer> }): Promise<Uint8Array> {
  return new Uint8Array(await ctx.export(EXPORT_LABEL, 32));
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
  return { sealed, opener: new ResponseOpener(ctx, await exportedSecret(ctx), enc) };
}

/**
 * Opens a sealed request as the desktop does (without its replay memory, which lives
 * in the desktop node): for tests of the TypeScript side against itself. `responseNonce`
 * fixes the responder nonce for test vectors only (by default it is random).
 */
export async function openRequest(
  desktopKey: CryptoKeyPair,
  browserPk: Uint8Array,
  info: Uint8Array,
  sealed: Uint8Array,
  responseNonce: Uint8Array = crypto.getRandomValues(new Uint8Array(RESPONSE_NONCE_LEN)),
): Promise<{ request: Uint8Array; sealer: ResponseSealer; controls: ControlOpener }> {
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
    const keys = await ChunkKeys.derive(await exportedSecret(ctx), enc, responseNonce);
    return { request, sealer: new ResponseSealer(keys, responseNonce.slice()), controls: new ControlOpener(ctx) };
  } catch {
    throw new E2eError('request_rejected', 'the request does not authenticate (wrong key or altered)');
  }
}
