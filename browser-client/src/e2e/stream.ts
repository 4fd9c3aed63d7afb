/**
 * End-to-end encryption on an action stream, the browser's side of
 * `desktop-node/src/e2e.rs` (docs/e2e.md, "On the stream" and "Pairing"):
 *
 *   OpenHeader.e2e, action:  0x01 || browser key id (8) || sealed request header (41)
 *   OpenHeader.e2e, pairing: 0x02 || browser public key (32) || sealed request header (41)
 *   first frame: the rest of the sealed request (the HPKE ciphertext)
 *   later frames (CANCEL): HPKE-seal(aad = "control", envelope) with the request's context
 *   answer frames: one sealed chunk (0x02 more, 0x03 final) per encoded envelope, the
 *   first preceded by 0x01 || response nonce; or, instead, one plain ERROR (request id 0,
 *   so first byte 0x00); a plain frame after a sealed one is tampering
 *
 * The browser key id is the first 8 bytes of SHA-256 of its X25519 public key; the
 * caller info is the device id.
 */

import { decodeEnvelope, encodeEnvelope, fromHex, type Envelope } from '../tunnel/codec';
import { E2eError, REQUEST_HEADER_LEN, ResponseOpener, sealRequest } from './index';

/** Mode byte of an action stream. */
export const MODE_ACTION = 1;
/** Mode byte of a pairing stream. */
export const MODE_PAIR = 2;

/** What `desktop-node pair` put in the link's fragment. */
export interface PairingLink {
  deviceId: string;
  desktopPk: Uint8Array;
  secret: Uint8Array;
}

/** Reads `…#pair=<device id>.<desktop key hex>.<secret hex>`; null when the URL has none. */
export function parsePairingLink(href: string): PairingLink | null {
  const hash = href.includes('#') ? href.slice(href.indexOf('#') + 1) : '';
  if (!hash.startsWith('pair=')) return null;
  const parts = hash.slice('pair='.length).split('.');
  if (parts.length !== 3) return null;
  const [deviceId, pk, secret] = parts as [string, string, string];
  if (!/^[0-9a-f]{64}$/.test(pk) || !/^([0-9a-f]{2})+$/.test(secret) || deviceId === '') return null;
  return { deviceId, desktopPk: fromHex(pk), secret: fromHex(secret) };
}

/** The first 8 bytes of SHA-256 of a browser public key. */
export async function keyId(publicKey: Uint8Array): Promise<Uint8Array> {
  const digest = await crypto.subtle.digest('SHA-256', publicKey as BufferSource);
  return new Uint8Array(digest).slice(0, 8);
}

/** What to send: `e2e` goes into the OpenHeader, `first` is the stream's first frame body. */
export interface SealedStream {
  e2e: Uint8Array;
  first: Uint8Array;
  opener: ResponseOpener;
}

function split(prefix: Uint8Array, sealed: Uint8Array, opener: ResponseOpener): SealedStream {
  const e2e = new Uint8Array(prefix.length + REQUEST_HEADER_LEN);
  e2e.set(prefix);
  e2e.set(sealed.subarray(0, REQUEST_HEADER_LEN), prefix.length);
  return { e2e, first: sealed.slice(REQUEST_HEADER_LEN), opener };
}

/** Seals an encoded request envelope for an action stream to `deviceId`. */
export async function sealAction(
  desktopPk: Uint8Array,
  browserKey: CryptoKeyPair,
  browserPk: Uint8Array,
  deviceId: string,
  envelope: Uint8Array,
  nowUnix: number = Math.floor(Date.now() / 1000),
): Promise<SealedStream> {
  const info = new TextEncoder().encode(deviceId);
  const { sealed, opener } = await sealRequest(desktopPk, browserKey, info, envelope, nowUnix);
  const prefix = new Uint8Array(9);
  prefix[0] = MODE_ACTION;
  prefix.set(await keyId(browserPk), 1);
  return split(prefix, sealed, opener);
}

/** Seals the pairing request that registers this browser with the desktop of `link`. */
export async function sealPairing(
  link: PairingLink,
  browserKey: CryptoKeyPair,
  browserPk: Uint8Array,
  name: string,
  nowUnix: number = Math.floor(Date.now() / 1000),
): Promise<SealedStream> {
  const info = new TextEncoder().encode(link.deviceId);
  let secret = '';
  for (const b of link.secret) secret += b.toString(16).padStart(2, '0');
  const body = new TextEncoder().encode(JSON.stringify({ secret, name }));
  const { sealed, opener } = await sealRequest(link.desktopPk, browserKey, info, body, nowUnix);
  const prefix = new Uint8Array(33);
  prefix[0] = MODE_PAIR;
  prefix.set(browserPk, 1);
  return split(prefix, sealed, opener);
}

/**
 * One answer frame of an encrypted stream (docs/e2e.md, "Telling frames apart"): the
 * envelope a sealed chunk holds, or a plain ERROR (the desktop's or the relay's refusal
 * instead of a sealed answer). Anything else is refused with an {@link E2eError}: a
 * plain frame once the sealed answer began (`unsealed`), a plain frame that is not an
 * ERROR with request id 0, a chunk that does not open.
 */
export async function openAnswer(opener: ResponseOpener, body: Uint8Array): Promise<{ envelope: Envelope; sealed: boolean }> {
  const frame = await opener.openFrame(body);
  switch (frame.kind) {
    case 'data':
      return { envelope: decodeEnvelope(frame.data), sealed: true };
    case 'plain': {
      let plain: Envelope | null = null;
      try {
        plain = decodeEnvelope(frame.body);
      } catch {
        // reported below
      }
      if (!plain || plain.body.type !== 'Error' || plain.requestId !== 0) {
        throw new E2eError('malformed', 'a plain answer on an encrypted stream that is not a refusal');
      }
      return { envelope: plain, sealed: false };
    }
  }
}

/** The frame body of a CANCEL on an encrypted stream: the envelope sealed with the request's context. */
export async function sealedCancel(opener: ResponseOpener, requestId: number, deviceId: string): Promise<Uint8Array> {
  return opener.sealControl(encodeEnvelope({ requestId, deviceId, body: { type: 'Cancel' } }));
}
