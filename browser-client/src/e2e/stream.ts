/**
 * End-to-end encryption on an action stream, the browser's side of
 * `desktop-node/src/e2e.rs` (docs/e2e.md, "On the stream" and "Pairing"):
 *
 *   OpenHeader.e2e, action:  0x01 || browser key id (8) || sealed request header (41)
 *   OpenHeader.e2e, pairing: 0x02 || browser public key (32) || sealed request header (41)
 *   first frame: the rest of the sealed request (the HPKE ciphertext)
 *   answer frames: one sealed chunk each, holding one encoded envelope; the last is final
 *
 * The browser key id is the first 8 bytes of SHA-256 of its X25519 public key; the
 * caller info is the device id.
 */

import { decodeEnvelope, fromHex, type Envelope } from '../tunnel/codec';
import { REQUEST_HEADER_LEN, ResponseOpener, sealRequest } from './index';

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
 * One answer frame of an encrypted stream: a sealed envelope, or (when the desktop
 * refused before it had a context) a plain ERROR envelope. Anything else is refused.
 */
export async function openAnswer(opener: ResponseOpener, body: Uint8Array): Promise<{ envelope: Envelope; sealed: boolean }> {
  try {
    const { data } = await opener.openChunk(body);
    return { envelope: decodeEnvelope(data), sealed: true };
  } catch (err) {
    let plain: Envelope;
    try {
      plain = decodeEnvelope(body);
    } catch {
      throw err;
    }
    if (plain.body.type !== 'Error') throw err;
    return { envelope: plain, sealed: false };
  }
}
