/**
 * The AI SuperApp wire protocol, version 1.2, in TypeScript.
 *
 * Byte for byte the same as the Rust crate `tunnel` (see `docs/protocol.md`):
 *
 * - frames: a `u32` big-endian body length, then the body (at most 1 MiB);
 * - bodies: postcard (varints for integers, length-prefixed strings and byte arrays,
 *   enums as a varint variant index followed by the variant's fields);
 * - headers (the first frame of a stream): `major`, `minor`, then the header's fields;
 * - envelopes (every later frame): `request_id`, `device_id`, then the message body.
 *
 * The module does no I/O. Every decoding problem is a thrown {@link CodecError} whose
 * message reads like the Rust side's (`malformed envelope: …`, `unsupported protocol
 * version 2.0; …`, `frame of … bytes exceeds the maximum of …`, `truncated frame: …`).
 */

/** The protocol major version this client speaks; peers with another major are refused. */
export const PROTOCOL_MAJOR = 1;
/**
 * The protocol minor version this client speaks. 1.1 added STATUS_SNAPSHOT_END (type 12),
 * which ends the snapshot of a device-status stream; 1.2 added EXECUTE_ACTION's `model`,
 * DEVICE_STATUS's `providers` and `unloadable` (appended fields: absent in a 1.1 peer's
 * message, where this decoder leaves them out) and the file messages (types 19–24).
 */
export const PROTOCOL_MINOR = 2;
/** The largest frame body any peer accepts: 1 MiB. */
export const MAX_FRAME_LEN = 1024 * 1024;
/** Bytes in a frame's length prefix. */
export const LEN_PREFIX = 4;
/**
 * Header limits, as `tunnel/src/header.rs` checks them when it decodes (docs/protocol.md,
 * "Header limits"): the largest header frame body, and each field's bounds.
 */
export const MAX_HEADER_LEN = 4096;
/** The longest device id or user id, in bytes (visible ASCII). */
export const MAX_ID_LEN = 128;
/** The longest access token in an OpenHeader, in bytes (visible ASCII). */
export const MAX_TOKEN_LEN = 2048;
/** The longest device token in a Hello, in bytes (visible ASCII). */
export const MAX_DEVICE_TOKEN_LEN = 256;
/** The longest node version in a Hello, in bytes (printable ASCII). */
export const MAX_NODE_VERSION_LEN = 64;
/** The length of an identity key: an X25519 public key. */
export const IDENTITY_KEY_LEN = 32;
/** The longest end-to-end blob in a header, in bytes. */
export const MAX_E2E_LEN = 512;

/** Any failure to encode or decode protocol bytes. */
export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CodecError';
  }
}

// ---------------------------------------------------------------------------------------
// postcard primitives
// ---------------------------------------------------------------------------------------

const U32_MAX = 0xffff_ffff;
const U32_VARINT_MAX_BYTES = 5;
const U64_VARINT_MAX_BYTES = 10;

const utf8Encoder = new TextEncoder();
// `fatal`: invalid UTF-8 is an error, never U+FFFD. `ignoreBOM`: keep a leading U+FEFF as
// a character, like Rust's `str::from_utf8`, instead of silently dropping it.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function checkUint(value: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new CodecError(`${what} must be an integer from 0 to ${max}, got ${String(value)}`);
  }
}

/** Appends postcard-encoded values to a growing byte buffer. */
export class Writer {
  private buf = new Uint8Array(64);
  private len = 0;

  private reserve(extra: number): void {
    const need = this.len + extra;
    if (need <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < need) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /** Appends raw bytes with no length prefix. */
  raw(bytes: Uint8Array): this {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
    return this;
  }

  /** A `u8`: one raw byte. */
  u8(value: number): this {
    checkUint(value, 0xff, 'u8');
    this.reserve(1);
    this.buf[this.len++] = value;
    return this;
  }

  /** Unsigned LEB128 of any safe non-negative integer (shared by u32/u64/lengths). */
  private varint(value: number): this {
    this.reserve(U64_VARINT_MAX_BYTES);
    // Division rather than bit operators: those truncate to 32 bits.
    let v = value;
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.len++] = v;
    return this;
  }

  /** A `u32` as a varint. */
  u32(value: number): this {
    checkUint(value, U32_MAX, 'u32');
    return this.varint(value);
  }

  /** A `u64` as a varint; values above `Number.MAX_SAFE_INTEGER` are refused. */
  u64(value: number): this {
    checkUint(value, Number.MAX_SAFE_INTEGER, 'u64');
    return this.varint(value);
  }

  /** A `bool`: `0` or `1`. */
  bool(value: boolean): this {
    return this.u8(value ? 1 : 0);
  }

  /** A `Vec<u8>`: varint length, then the bytes. */
  bytes(value: Uint8Array): this {
    this.varint(value.length);
    return this.raw(value);
  }

  /** A `String`: varint length, then UTF-8. Strings with lone surrogates are refused. */
  string(value: string): this {
    if (!value.isWellFormed()) {
      throw new CodecError('string holds a lone UTF-16 surrogate and has no UTF-8 form');
    }
    return this.bytes(utf8Encoder.encode(value));
  }

  /** An `Option<T>`: `0` for none, `1` then the value. */
  option<T>(value: T | null, write: (w: this, v: T) => void): this {
    if (value === null) return this.u8(0);
    this.u8(1);
    write(this, value);
    return this;
  }

  /** An enum's variant index (the variant's fields follow). */
  variant(index: number): this {
    return this.u32(index);
  }

  /** The bytes written so far (a copy). */
  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** Reads postcard-encoded values from a byte array, front to back. */
export class Reader {
  private pos = 0;

  constructor(private readonly buf: Uint8Array) {}

  /** Bytes not read yet. */
  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private take(n: number, what: string): Uint8Array {
    if (n > this.remaining) {
      throw new CodecError(
        `unexpected end of input reading ${what}: need ${n} bytes, ${this.remaining} left`,
      );
    }
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  private byte(what: string): number {
    const b = this.buf[this.pos];
    if (b === undefined) throw new CodecError(`unexpected end of input reading ${what}`);
    this.pos += 1;
    return b;
  }

  /** A raw byte. */
  u8(): number {
    return this.byte('u8');
  }

  /**
   * An unsigned LEB128 varint of at most `maxBytes` bytes whose value fits `bits` bits,
   * like postcard (which, like here, also accepts non-minimal encodings).
   */
  private varint(maxBytes: number, bits: number, what: string): bigint {
    let out = 0n;
    for (let i = 0; i < maxBytes; i++) {
      const b = this.byte(what);
      out |= BigInt(b & 0x7f) << BigInt(7 * i);
      if ((b & 0x80) === 0) {
        if (i === maxBytes - 1 && b >> (bits - 7 * i) !== 0) {
          throw new CodecError(`${what} varint overflows ${bits} bits`);
        }
        return out;
      }
    }
    throw new CodecError(`${what} varint is longer than ${maxBytes} bytes`);
  }

  /** A `u32` varint. */
  u32(): number {
    return Number(this.varint(U32_VARINT_MAX_BYTES, 32, 'u32'));
  }

  /** A `u64` varint; values above `Number.MAX_SAFE_INTEGER` are refused. */
  u64(): number {
    return this.safe(this.varint(U64_VARINT_MAX_BYTES, 64, 'u64'), 'u64');
  }

  private safe(value: bigint, what: string): number {
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CodecError(
        `${what} value ${value} is larger than Number.MAX_SAFE_INTEGER and cannot be represented`,
      );
    }
    return Number(value);
  }

  private length(what: string): number {
    return this.safe(this.varint(U64_VARINT_MAX_BYTES, 64, `${what} length`), `${what} length`);
  }

  /** A `bool`; anything but `0` or `1` is an error. */
  bool(): boolean {
    const b = this.byte('bool');
    if (b > 1) throw new CodecError(`invalid bool byte ${b}`);
    return b === 1;
  }

  /** A `Vec<u8>` (a copy). */
  bytes(): Uint8Array {
    return this.take(this.length('byte array'), 'byte array').slice();
  }

  /** A `String`; invalid UTF-8 is an error. */
  string(): string {
    const raw = this.take(this.length('string'), 'string');
    try {
      return utf8Decoder.decode(raw);
    } catch {
      throw new CodecError('string is not valid UTF-8');
    }
  }

  /** An `Option<T>`; a tag other than `0` or `1` is an error. */
  option<T>(read: (r: this) => T): T | null {
    const tag = this.byte('option tag');
    if (tag === 0) return null;
    if (tag === 1) return read(this);
    throw new CodecError(`invalid option tag ${tag}`);
  }

  /** An enum's variant index. */
  variant(): number {
    return this.u32();
  }
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

function tooLarge(len: number, max: number): CodecError {
  return new CodecError(`frame of ${len} bytes exceeds the maximum of ${max}`);
}

/** Wraps `body` in a frame: its `u32` big-endian length, then the body. */
export function encodeFrame(body: Uint8Array, max: number = MAX_FRAME_LEN): Uint8Array {
  if (body.length > max) throw tooLarge(body.length, max);
  const out = new Uint8Array(LEN_PREFIX + body.length);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, LEN_PREFIX);
  return out;
}

/**
 * A push-based frame decoder: {@link push} bytes as they arrive, take whole frame bodies
 * out with {@link next}, and call {@link finish} at end of stream.
 */
export class FrameReader {
  private buf = new Uint8Array(0);
  private start = 0;
  private end = 0;

  /** A decoder that refuses frames whose body is longer than `max` bytes. */
  constructor(private readonly max: number = MAX_FRAME_LEN) {}

  /** Bytes buffered but not yet returned as a frame. */
  get pending(): number {
    return this.end - this.start;
  }

  /** Appends received bytes. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.end + chunk.length > this.buf.length) {
      const live = this.pending;
      const need = live + chunk.length;
      if (need <= this.buf.length) {
        // Enough room once the consumed bytes at the front are dropped.
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        const grown = new Uint8Array(Math.max(need, this.buf.length * 2, 4096));
        grown.set(this.buf.subarray(this.start, this.end));
        this.buf = grown;
      }
      this.start = 0;
      this.end = live;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  /** The body length announced by the buffered prefix, or null while it is incomplete. */
  private announced(): number | null {
    if (this.pending < LEN_PREFIX) return null;
    return new DataView(this.buf.buffer, this.buf.byteOffset + this.start, LEN_PREFIX).getUint32(0, false);
  }

  /**
   * Takes the next whole frame's body (a copy), or null if more bytes are needed.
   * Throws as soon as a length prefix above the maximum is buffered.
   */
  next(): Uint8Array | null {
    const len = this.announced();
    if (len === null) return null;
    if (len > this.max) throw tooLarge(len, this.max);
    const total = LEN_PREFIX + len;
    if (this.pending < total) return null;
    const body = this.buf.slice(this.start + LEN_PREFIX, this.start + total);
    this.start += total;
    if (this.start === this.end) this.start = this.end = 0;
    return body;
  }

  /** Call at end of stream: fine if nothing is left, a "truncated" error otherwise. */
  finish(): void {
    if (this.pending === 0) return;
    const len = this.announced();
    const need = len === null ? LEN_PREFIX : LEN_PREFIX + len;
    throw new CodecError(
      `truncated frame: stream ended mid-frame (${this.pending} of ${need} bytes)`,
    );
  }
}

// ---------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------

/** A protocol version. */
export interface Version {
  major: number;
  minor: number;
}

/** What a stream is for (0 Action, 1 Control). */
export type StreamKind = 'Action' | 'Control';

const STREAM_KINDS: readonly StreamKind[] = ['Action', 'Control'];

/** First frame of a stream a browser opens to the relay. */
export interface OpenHeader {
  /** The device the stream is for. */
  deviceId: string;
  /** What the stream carries. */
  kind: StreamKind;
  /** The user's access token (a JWT). */
  token: string;
  /** Reserved for end-to-end mode, forwarded untouched; null for plain streams. */
  e2e: Uint8Array | null;
}

/** First frame of a stream the relay opens to a desktop on a browser's behalf. */
export interface RelayHeader {
  userId: string;
  /** The browser session (one WebTransport session) the stream belongs to. */
  sessionId: number;
  kind: StreamKind;
  e2e: Uint8Array | null;
}

/** First frame of a desktop's control stream. */
export interface Hello {
  deviceToken: string;
  nodeVersion: string;
  /** The node's X25519 identity public key (32 bytes). */
  identityKey: Uint8Array;
}

function writeKind(w: Writer, kind: StreamKind): void {
  const index = STREAM_KINDS.indexOf(kind);
  if (index < 0) throw new CodecError(`unknown stream kind ${String(kind)}`);
  w.variant(index);
}

function readKind(r: Reader): StreamKind {
  const index = r.variant();
  const kind = STREAM_KINDS[index];
  if (kind === undefined) throw new CodecError(`unknown stream kind ${index}`);
  return kind;
}

function writeBytes(w: Writer, v: Uint8Array): void {
  w.bytes(v);
}

function headerWriter(): Writer {
  return new Writer().u8(PROTOCOL_MAJOR).u8(PROTOCOL_MINOR);
}

/**
 * Reads and checks a header's version prefix. Returns the peer's version; throws for a
 * body too short to hold one or a different major version.
 */
export function decodeHeaderVersion(body: Uint8Array): Version {
  const major = body[0];
  const minor = body[1];
  if (major === undefined || minor === undefined) {
    throw new CodecError('frame too short to hold a protocol version');
  }
  if (major !== PROTOCOL_MAJOR) {
    throw new CodecError(
      `unsupported protocol version ${major}.${minor}; this side speaks ${PROTOCOL_MAJOR}.x`,
    );
  }
  return { major, minor };
}

/**
 * Checks the version and the header size, then decodes the fields (trailing bytes from a
 * newer minor are ignored), then checks each field's rule.
 */
function decodeHeader<T>(
  body: Uint8Array,
  what: string,
  read: (r: Reader) => T,
  check: (h: T, field: FieldCheck) => void,
): T {
  decodeHeaderVersion(body);
  if (body.length > MAX_HEADER_LEN) {
    throw new CodecError(
      `${what} of ${body.length} bytes exceeds the header limit of ${MAX_HEADER_LEN}`,
    );
  }
  const header = malformedAs(what, () => read(new Reader(body.subarray(2))));
  check(header, (field, problem) => {
    throw new CodecError(`invalid ${what}: ${field} ${problem}`);
  });
  return header;
}

/** Reports a field that breaks its rule (throws). */
type FieldCheck = (field: string, problem: string) => never;

/** A text field's rule, worded as the Rust decoder words it. */
function checkText(
  fail: FieldCheck,
  field: string,
  value: string,
  max: number,
  required: boolean,
  space: boolean,
): void {
  const len = new TextEncoder().encode(value).length;
  if (len > max) fail(field, `is ${len} bytes long, over the limit of ${max}`);
  if (required && len === 0) fail(field, 'is empty');
  const lowest = space ? 0x20 : 0x21;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < lowest || c > 0x7e) fail(field, 'has a character outside printable ASCII');
  }
}

/** The end-to-end blob's rule: absent, or 1 to MAX_E2E_LEN bytes. */
function checkE2e(fail: FieldCheck, e2e: Uint8Array | null): void {
  if (e2e === null) return;
  if (e2e.length === 0) fail('e2e', 'is empty');
  if (e2e.length > MAX_E2E_LEN) {
    fail('e2e', `is ${e2e.length} bytes long, over the limit of ${MAX_E2E_LEN}`);
  }
}

/** Runs a decoder, turning its errors into `malformed <what>: <reason>`. */
function malformedAs<T>(what: string, decode: () => T): T {
  try {
    return decode();
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new CodecError(`malformed ${what}: ${reason}`);
  }
}

/** Encodes an {@link OpenHeader} as a frame body (version prefix included). */
export function encodeOpenHeader(h: OpenHeader): Uint8Array {
  const w = headerWriter().string(h.deviceId);
  writeKind(w, h.kind);
  return w.string(h.token).option(h.e2e, writeBytes).finish();
}

/** Decodes an {@link OpenHeader} frame body. */
export function decodeOpenHeader(body: Uint8Array): OpenHeader {
  return decodeHeader(body, 'stream-open header', (r) => ({
    deviceId: r.string(),
    kind: readKind(r),
    token: r.string(),
    e2e: r.option((o) => o.bytes()),
  }), (h, fail) => {
    checkText(fail, 'device_id', h.deviceId, MAX_ID_LEN, h.kind !== 'Control', false);
    checkText(fail, 'token', h.token, MAX_TOKEN_LEN, false, false);
    checkE2e(fail, h.e2e);
  });
}

/** Encodes a {@link RelayHeader} as a frame body (version prefix included). */
export function encodeRelayHeader(h: RelayHeader): Uint8Array {
  const w = headerWriter().string(h.userId).u64(h.sessionId);
  writeKind(w, h.kind);
  return w.option(h.e2e, writeBytes).finish();
}

/** Decodes a {@link RelayHeader} frame body. */
export function decodeRelayHeader(body: Uint8Array): RelayHeader {
  return decodeHeader(body, 'relay header', (r) => ({
    userId: r.string(),
    sessionId: r.u64(),
    kind: readKind(r),
    e2e: r.option((o) => o.bytes()),
  }), (h, fail) => {
    checkText(fail, 'user_id', h.userId, MAX_ID_LEN, true, false);
    checkE2e(fail, h.e2e);
  });
}

/** Encodes a {@link Hello} as a frame body (version prefix included). */
export function encodeHello(h: Hello): Uint8Array {
  return headerWriter().string(h.deviceToken).string(h.nodeVersion).bytes(h.identityKey).finish();
}

/** Decodes a {@link Hello} frame body. */
export function decodeHello(body: Uint8Array): Hello {
  return decodeHeader(body, 'hello', (r) => ({
    deviceToken: r.string(),
    nodeVersion: r.string(),
    identityKey: r.bytes(),
  }), (h, fail) => {
    checkText(fail, 'device_token', h.deviceToken, MAX_DEVICE_TOKEN_LEN, true, false);
    checkText(fail, 'node_version', h.nodeVersion, MAX_NODE_VERSION_LEN, true, true);
    if (h.identityKey.length !== IDENTITY_KEY_LEN) {
      fail('identity_key', `is ${h.identityKey.length} bytes long, not ${IDENTITY_KEY_LEN}`);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Envelopes
// ---------------------------------------------------------------------------------------

/** One installed mini-app in a DEVICE_STATUS. */
export interface AppStatus {
  id: string;
  version: string;
  enabled: boolean;
}

/** An AI provider a desktop is set up to use, in a DEVICE_STATUS (1.2): names only, never a key. */
export interface ProviderStatus {
  /** `openai`, `anthropic`, `google`, `local`. */
  name: string;
  /** The models a run may choose, the desktop's default first. */
  models: string[];
  /** Its API key is configured (or it needs none). */
  configured: boolean;
}

/** An installed app the desktop cannot run, in a DEVICE_STATUS (1.2), with why in a sentence. */
export interface UnloadableApp {
  id: string;
  /** The version that should be active ('' when the desktop cannot tell). */
  version: string;
  reason: string;
}

/** One run of an action as the desktop's history keeps it (HISTORY_PAGE, HISTORY_RUN). */
export interface RunRecord {
  /** The desktop's id for the run (increasing with time). */
  id: number;
  appId: string;
  /** The app's name from its manifest. */
  appName: string;
  action: string;
  /** The JSON payload the browser sent. */
  input: string;
  /** The output text (the STREAM_CHUNKs joined). */
  output: string;
  /** Milliseconds since the Unix epoch (the desktop's clock). */
  startedMs: number;
  durationMs: number;
  /** `done`, `failed` or `cancelled`. */
  status: string;
  /** ERROR code and message of a failed or cancelled run; empty when done. */
  errorCode: string;
  errorMessage: string;
  /** The desktop kept only the beginning of the input or output (its caps). */
  capped: boolean;
  /** In a HISTORY_PAGE: input and output are shortened (HISTORY_GET has them whole). */
  preview: boolean;
}

/** What an envelope carries; `type` is the message type (its number on the wire below). */
export type Body =
  /**
   * 0, browser → desktop: run an action with a JSON payload; `model` (1.2; absent or null:
   * the desktop's default) is one of the models the desktop's DEVICE_STATUS offers.
   */
  | { type: 'ExecuteAction'; appId: string; action: string; payload: string; model?: string | null }
  /** 1, browser → desktop: install an app (latest when `version` is null). */
  | { type: 'InstallApp'; appId: string; version: string | null }
  /** 2, browser → desktop: remove an app. */
  | { type: 'UninstallApp'; appId: string }
  /** 3, browser → desktop: ask for a DEVICE_STATUS. */
  | { type: 'GetStatus' }
  /** 4, desktop → browser: the next piece of output. */
  | { type: 'StreamChunk'; seq: number; data: string }
  /** 5, desktop → browser: the action finished. */
  | { type: 'StreamEnd'; chunks: number; elapsedMs: number }
  /** 6, any direction: the request failed. */
  | { type: 'Error'; code: string; message: string }
  /**
   * 7, desktop → browser: the device's state. `providers` and `unloadable` (1.2) are left
   * out when empty or absent (a 1.1 desktop, or the relay's own status events).
   */
  | {
      type: 'DeviceStatus';
      online: boolean;
      nodeVersion: string;
      apps: AppStatus[];
      providers?: ProviderStatus[];
      unloadable?: UnloadableApp[];
    }
  /** 8, browser → desktop: stop the action on this stream. */
  | { type: 'Cancel' }
  /** 9, control stream: are you there? */
  | { type: 'Ping'; nonce: number }
  /** 10, control stream: the answer to PING. */
  | { type: 'Pong'; nonce: number }
  /** 11, relay → desktop: the HELLO was accepted. */
  | { type: 'Welcome'; deviceId: string; version: Version; heartbeatSecs: number }
  /**
   * 12, relay → browser on a device-status stream (protocol 1.1): the snapshot (one
   * DEVICE_STATUS per device of the user) is complete; later DEVICE_STATUS are changes.
   * Sent with `devices: 0` to a user with no devices, so "none" differs from "slow".
   */
  | { type: 'StatusSnapshotEnd'; devices: number }
  /** 13, browser → desktop (Control stream): a page of the desktop's run history, newest first. */
  | { type: 'HistoryList'; query: string; offset: number; limit: number }
  /** 14, browser → desktop (Control stream): one run in full. */
  | { type: 'HistoryGet'; runId: number }
  /** 15, browser → desktop (Control stream): delete one run, or all when `runId` is null. */
  | { type: 'HistoryDelete'; runId: number | null }
  /** 16, desktop → browser: the answer to HISTORY_LIST. */
  | { type: 'HistoryPage'; total: number; runs: RunRecord[] }
  /** 17, desktop → browser: the answer to HISTORY_GET. */
  | { type: 'HistoryRun'; run: RunRecord }
  /** 18, desktop → browser: the answer to HISTORY_DELETE. */
  | { type: 'HistoryDeleted'; count: number }
  /**
   * 19 (since 1.2), browser → desktop (Control stream): a page of a folder the app
   * `appId` was granted (`path` as the app writes it; empty for the granted folders).
   */
  | { type: 'FilesList'; appId: string; path: string; offset: number; limit: number }
  /** 20 (since 1.2), desktop → browser: the answer to FILES_LIST. */
  | { type: 'FilesPage'; path: string; total: number; entries: FileEntry[] }
  /**
   * 21 (since 1.2), browser → desktop (Control stream): `size` bytes of a file for the
   * app's data folder follow in FILE_CHUNKs.
   */
  | { type: 'FileUpload'; appId: string; name: string; size: number }
  /** 22 (since 1.2), browser → desktop after FILE_UPLOAD: the next bytes (at most 64 KiB). */
  | { type: 'FileChunk'; data: Uint8Array }
  /** 23 (since 1.2), desktop → browser: bytes of the upload written so far (not final). */
  | { type: 'FileProgress'; received: number }
  /** 24 (since 1.2), desktop → browser: the upload is stored; `path` is what a form submits. */
  | { type: 'FileStored'; path: string; size: number };

/** One entry of a FILES_PAGE. */
export interface FileEntry {
  /** The entry's name (for the granted folders: the grant as written, `$DOCUMENTS`). */
  name: string;
  /** Its path as the app writes it (what a form submits, or the next FILES_LIST). */
  path: string;
  dir: boolean;
  /** Bytes (0 for folders). */
  size: number;
}

/** The message types in wire order: the index is the type number. */
export const MESSAGE_TYPES = [
  'ExecuteAction',
  'InstallApp',
  'UninstallApp',
  'GetStatus',
  'StreamChunk',
  'StreamEnd',
  'Error',
  'DeviceStatus',
  'Cancel',
  'Ping',
  'Pong',
  'Welcome',
  'StatusSnapshotEnd',
  'HistoryList',
  'HistoryGet',
  'HistoryDelete',
  'HistoryPage',
  'HistoryRun',
  'HistoryDeleted',
  'FilesList',
  'FilesPage',
  'FileUpload',
  'FileChunk',
  'FileProgress',
  'FileStored',
] as const satisfies readonly Body['type'][];

/** One protocol message: every frame after a stream's header. */
export interface Envelope {
  /** Chosen by the requester; replies carry the same id. */
  requestId: number;
  /** The device the message is for or from (empty where the stream already says). */
  deviceId: string;
  body: Body;
}

/** Encodes an {@link Envelope} as a frame body. */
export function encodeEnvelope(env: Envelope): Uint8Array {
  const w = new Writer().u64(env.requestId).string(env.deviceId);
  const b = env.body;
  const index = (MESSAGE_TYPES as readonly string[]).indexOf(b.type);
  if (index < 0) throw new CodecError(`unknown message type ${String(b.type)}`);
  w.variant(index);
  switch (b.type) {
    case 'ExecuteAction':
      w.string(b.appId).string(b.action).string(b.payload);
      w.option(b.model ?? null, (o, m) => o.string(m));
      break;
    case 'InstallApp':
      w.string(b.appId).option(b.version, (o, v) => o.string(v));
      break;
    case 'UninstallApp':
      w.string(b.appId);
      break;
    case 'GetStatus':
    case 'Cancel':
      break;
    case 'StreamChunk':
      w.u32(b.seq).string(b.data);
      break;
    case 'StreamEnd':
      w.u32(b.chunks).u32(b.elapsedMs);
      break;
    case 'Error':
      w.string(b.code).string(b.message);
      break;
    case 'DeviceStatus':
      w.bool(b.online).string(b.nodeVersion).u64(b.apps.length);
      for (const app of b.apps) w.string(app.id).string(app.version).bool(app.enabled);
      w.u64(b.providers?.length ?? 0);
      for (const p of b.providers ?? []) {
        w.string(p.name).u64(p.models.length);
        for (const m of p.models) w.string(m);
        w.bool(p.configured);
      }
      w.u64(b.unloadable?.length ?? 0);
      for (const u of b.unloadable ?? []) w.string(u.id).string(u.version).string(u.reason);
      break;
    case 'Ping':
    case 'Pong':
      w.u64(b.nonce);
      break;
    case 'Welcome':
      w.string(b.deviceId).u8(b.version.major).u8(b.version.minor).u32(b.heartbeatSecs);
      break;
    case 'StatusSnapshotEnd':
      w.u32(b.devices);
      break;
    case 'HistoryList':
      w.string(b.query).u32(b.offset).u32(b.limit);
      break;
    case 'HistoryGet':
      w.u64(b.runId);
      break;
    case 'HistoryDelete':
      w.option(b.runId, (o, id) => o.u64(id));
      break;
    case 'HistoryPage':
      w.u32(b.total).u64(b.runs.length);
      for (const run of b.runs) writeRun(w, run);
      break;
    case 'HistoryRun':
      writeRun(w, b.run);
      break;
    case 'HistoryDeleted':
      w.u32(b.count);
      break;
    case 'FilesList':
      w.string(b.appId).string(b.path).u32(b.offset).u32(b.limit);
      break;
    case 'FilesPage':
      w.string(b.path).u32(b.total).u64(b.entries.length);
      for (const e of b.entries) w.string(e.name).string(e.path).bool(e.dir).u64(e.size);
      break;
    case 'FileUpload':
      w.string(b.appId).string(b.name).u64(b.size);
      break;
    case 'FileChunk':
      w.bytes(b.data);
      break;
    case 'FileProgress':
      w.u64(b.received);
      break;
    case 'FileStored':
      w.string(b.path).u64(b.size);
      break;
  }
  return w.finish();
}

function writeRun(w: Writer, r: RunRecord): void {
  w.u64(r.id).string(r.appId).string(r.appName).string(r.action).string(r.input).string(r.output);
  w.u64(r.startedMs).u32(r.durationMs).string(r.status).string(r.errorCode).string(r.errorMessage);
  w.bool(r.capped).bool(r.preview);
}

function readRun(r: Reader): RunRecord {
  return {
    id: r.u64(),
    appId: r.string(),
    appName: r.string(),
    action: r.string(),
    input: r.string(),
    output: r.string(),
    startedMs: r.u64(),
    durationMs: r.u32(),
    status: r.string(),
    errorCode: r.string(),
    errorMessage: r.string(),
    capped: r.bool(),
    preview: r.bool(),
  };
}

function readBody(r: Reader): Body {
  const index = r.variant();
  const type = MESSAGE_TYPES[index];
  switch (type) {
    case 'ExecuteAction': {
      const appId = r.string();
      const action = r.string();
      const payload = r.string();
      // 1.2 appended `model`; a 1.1 browser's message ends before it.
      const model = r.remaining > 0 ? r.option((o) => o.string()) : null;
      return { type, appId, action, payload, ...(model !== null ? { model } : {}) };
    }
    case 'InstallApp':
      return { type, appId: r.string(), version: r.option((o) => o.string()) };
    case 'UninstallApp':
      return { type, appId: r.string() };
    case 'GetStatus':
    case 'Cancel':
      return { type };
    case 'StreamChunk':
      return { type, seq: r.u32(), data: r.string() };
    case 'StreamEnd':
      return { type, chunks: r.u32(), elapsedMs: r.u32() };
    case 'Error':
      return { type, code: r.string(), message: r.string() };
    case 'DeviceStatus': {
      const online = r.bool();
      const nodeVersion = r.string();
      const count = r.u64();
      const apps: AppStatus[] = [];
      for (let i = 0; i < count; i++) {
        apps.push({ id: r.string(), version: r.string(), enabled: r.bool() });
      }
      // 1.2 appended `providers` and `unloadable`; a 1.1 desktop's message ends before them.
      const providers: ProviderStatus[] = [];
      const unloadable: UnloadableApp[] = [];
      if (r.remaining > 0) {
        const n = r.u64();
        for (let i = 0; i < n; i++) {
          const name = r.string();
          const models: string[] = [];
          const m = r.u64();
          for (let j = 0; j < m; j++) models.push(r.string());
          providers.push({ name, models, configured: r.bool() });
        }
      }
      if (r.remaining > 0) {
        const n = r.u64();
        for (let i = 0; i < n; i++) unloadable.push({ id: r.string(), version: r.string(), reason: r.string() });
      }
      return {
        type,
        online,
        nodeVersion,
        apps,
        ...(providers.length ? { providers } : {}),
        ...(unloadable.length ? { unloadable } : {}),
      };
    }
    case 'Ping':
    case 'Pong':
      return { type, nonce: r.u64() };
    case 'Welcome':
      return {
        type,
        deviceId: r.string(),
        version: { major: r.u8(), minor: r.u8() },
        heartbeatSecs: r.u32(),
      };
    case 'StatusSnapshotEnd':
      return { type, devices: r.u32() };
    case 'HistoryList':
      return { type, query: r.string(), offset: r.u32(), limit: r.u32() };
    case 'HistoryGet':
      return { type, runId: r.u64() };
    case 'HistoryDelete':
      return { type, runId: r.option((o) => o.u64()) };
    case 'HistoryPage': {
      const total = r.u32();
      const count = r.u64();
      const runs: RunRecord[] = [];
      for (let i = 0; i < count; i++) runs.push(readRun(r));
      return { type, total, runs };
    }
    case 'HistoryRun':
      return { type, run: readRun(r) };
    case 'HistoryDeleted':
      return { type, count: r.u32() };
    case 'FilesList':
      return { type, appId: r.string(), path: r.string(), offset: r.u32(), limit: r.u32() };
    case 'FilesPage': {
      const path = r.string();
      const total = r.u32();
      const count = r.u64();
      const entries: FileEntry[] = [];
      for (let i = 0; i < count; i++) entries.push({ name: r.string(), path: r.string(), dir: r.bool(), size: r.u64() });
      return { type, path, total, entries };
    }
    case 'FileUpload':
      return { type, appId: r.string(), name: r.string(), size: r.u64() };
    case 'FileChunk':
      return { type, data: r.bytes() };
    case 'FileProgress':
      return { type, received: r.u64() };
    case 'FileStored':
      return { type, path: r.string(), size: r.u64() };
  }
  throw new CodecError(`unknown message type ${index}`);
}

/** Decodes an {@link Envelope} frame body. Trailing bytes (newer minor) are ignored. */
export function decodeEnvelope(body: Uint8Array): Envelope {
  return malformedAs('envelope', () => {
    const r = new Reader(body);
    return { requestId: r.u64(), deviceId: r.string(), body: readBody(r) };
  });
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/** Lowercase hex of some bytes. */
export function toHex(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

/** Bytes from hex (case-insensitive, even length); anything else is an error. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new CodecError(`not a hex string: ${JSON.stringify(hex.slice(0, 40))}`);
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
