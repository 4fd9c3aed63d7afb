/** The browser's e2e key kept across visits (src/e2e/keystore.ts), both forms. */

import { describe, expect, it } from 'vitest';

import { importKeyPair, openRequest, sealRequest } from '../../src/e2e/index';
import { loadOrCreateBrowserKey, type KeyStore, type StoredKey } from '../../src/e2e/keystore';
import { fromHex } from '../../src/tunnel/codec';
import vectors from '../../../crypto/vectors/e2e-vectors.json';

function memoryStore(): KeyStore & { value?: StoredKey } {
  const store: KeyStore & { value?: StoredKey } = {
    get: async () => store.value,
    put: async (k) => {
      store.value = k;
    },
  };
  return store;
}

async function roundTrip(native: boolean) {
  const store = memoryStore();
  const first = await loadOrCreateBrowserKey(store, native);
  const again = await loadOrCreateBrowserKey(store, native);
  expect(again.publicKey).toEqual(first.publicKey);
  expect(again.native).toBe(native);
  // The key seals requests the desktop opens, authenticated as this browser.
  const desktopPk = fromHex(vectors.desktop_pk);
  const info = new TextEncoder().encode('dev-1');
  const { sealed } = await sealRequest(desktopPk, again.keyPair, info, new TextEncoder().encode('hi'), 1_790_000_000);
  const desktop = await importKeyPair(fromHex(vectors.desktop_sk), desktopPk);
  const { request } = await openRequest(desktop, again.publicKey, info, sealed);
  expect(new TextDecoder().decode(request)).toBe('hi');
  return store.value!;
}

describe('browser key store', () => {
  it('keeps a non-extractable WebCrypto key where X25519 exists', async () => {
    const stored = await roundTrip(true);
    expect(stored.kind).toBe('native');
    if (stored.kind === 'native') {
      expect(stored.privateKey.extractable).toBe(false);
      await expect(crypto.subtle.exportKey('raw', stored.privateKey)).rejects.toThrow();
    }
  });

  it('otherwise keeps the secret wrapped under a non-extractable AES key', async () => {
    const stored = await roundTrip(false);
    expect(stored.kind).toBe('wrapped');
    if (stored.kind === 'wrapped') {
      expect(stored.wrappingKey.extractable).toBe(false);
      expect(stored.wrapped.length).toBe(32 + 16);
    }
  });

  it('falls back to the wrapped form where the store cannot give a native key back (WebKitGTK 2.50)', async () => {
    // WebKitGTK's IndexedDB takes a record holding an X25519 CryptoKey and then reads it
    // back as null (its structured clone cannot deserialize X25519 keys); AES keys are fine.
    const store: KeyStore & { value?: StoredKey; puts: number } = {
      puts: 0,
      get: async () => (store.value?.kind === 'native' ? (null as unknown as undefined) : store.value),
      put: async (k) => {
        store.puts++;
        store.value = k;
      },
    };
    const first = await loadOrCreateBrowserKey(store, true);
    expect(first.native).toBe(false);
    expect(store.value?.kind).toBe('wrapped');
    // The next load finds the same key: the desktop sees the browser it paired with.
    const again = await loadOrCreateBrowserKey(store, true);
    expect(again.publicKey).toEqual(first.publicKey);
    expect(store.puts).toBe(2);
  });

  it('says so when the store keeps no key at all, rather than making a new one per load', async () => {
    const store: KeyStore = { get: async () => undefined, put: async () => undefined };
    await expect(loadOrCreateBrowserKey(store, true)).rejects.toThrow(/cannot keep the end-to-end key/);
  });
});
