/**
 * What the web app needs to use end-to-end encryption: finish a pairing from the
 * `#pair=` link it was opened with, remember which desktops are paired (their public
 * keys are not secret: localStorage), and give {@link RelayClient.runAction} the keys for
 * a device. The browser's own key lives in IndexedDB (keystore.ts).
 */

import type { E2eKeys, RelayClient } from '../tunnel/client';
import { fromHex, toHex } from '../tunnel/codec';
import { indexedDbKeyStore, loadOrCreateBrowserKey, type KeyStore } from './keystore';
import { parsePairingLink } from './stream';

const PAIRED = 'aisa-e2e-paired';

/** Where the paired desktops' keys are remembered (localStorage in the app). */
export interface PairedStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

function paired(store: PairedStore): Record<string, string> {
  try {
    return JSON.parse(store.getItem(PAIRED) ?? '{}') as Record<string, string>;
  } catch {
    return {};
  }
}

/** A key's fingerprint as people compare it (the same as `aisa_crypto::fingerprint`):
 * the first 16 bytes of its SHA-256, as eight groups of four hex digits. */
export async function fingerprint(publicKey: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', publicKey as BufferSource));
  const hex = toHex(digest.slice(0, 16));
  return hex.match(/.{4}/g)!.join(':');
}

/**
 * When the page was opened with a pairing link: pairs this browser with that desktop,
 * remembers the desktop key, and returns the device id and the desktop key's
 * fingerprint (to show). Returns null when `href` has no pairing link.
 */
export async function completePairing(
  client: RelayClient,
  token: string,
  href: string,
  name: string,
  keys: KeyStore = indexedDbKeyStore(),
  store: PairedStore = localStorage,
): Promise<{ deviceId: string; fingerprint: string } | null> {
  const link = parsePairingLink(href);
  if (!link) return null;
  const key = await loadOrCreateBrowserKey(keys);
  await client.pair({ link, token, browserKey: key.keyPair, browserPk: key.publicKey, name });
  const all = paired(store);
  all[link.deviceId] = toHex(link.desktopPk);
  store.setItem(PAIRED, JSON.stringify(all));
  return { deviceId: link.deviceId, fingerprint: await fingerprint(link.desktopPk) };
}

/** Whether `deviceId` is paired, and its desktop key's fingerprint (no key is loaded). */
export async function pairedFingerprint(deviceId: string, store: PairedStore = localStorage): Promise<string | null> {
  const pk = paired(store)[deviceId];
  return pk ? fingerprint(fromHex(pk)) : null;
}

/** The keys for an encrypted action on `deviceId`, or null when it is not paired. */
export async function e2eKeysFor(
  deviceId: string,
  keys: KeyStore = indexedDbKeyStore(),
  store: PairedStore = localStorage,
): Promise<(E2eKeys & { fingerprint: string }) | null> {
  const pk = paired(store)[deviceId];
  if (!pk) return null;
  const key = await loadOrCreateBrowserKey(keys);
  const desktopPk = fromHex(pk);
  return {
    desktopPk,
    browserKey: key.keyPair,
    browserPk: key.publicKey,
    fingerprint: await fingerprint(desktopPk),
  };
}
