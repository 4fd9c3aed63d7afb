/**
 * The browser's static X25519 key for end-to-end encryption, kept across visits.
 *
 * Where WebCrypto has X25519, the private key is a **non-extractable** `CryptoKey`
 * (no script, this one included, can read its bytes); IndexedDB stores the `CryptoKey`
 * object itself. Elsewhere the key comes from `@hpke/dhkem-x25519` and its 32 bytes are
 * stored **wrapped**: encrypted with AES-GCM under a non-extractable AES key that is kept
 * in the same IndexedDB record (so a copy of the stored bytes alone does not reveal it).
 *
 * A native key is kept only if the store gives it back: WebKitGTK 2.50 has WebCrypto
 * X25519 but cannot deserialize an X25519 `CryptoKey` (IndexedDB `put` succeeds, `get`
 * answers `null`; `structuredClone` of the key throws "Unable to deserialize data"),
 * while AES-GCM keys round-trip. There a native key would be lost at once and a new one
 * made at every load, so actions would be sealed with a key the desktop never paired
 * with. So every new key is read back after it is stored; a native one that does not
 * come back is replaced by the wrapped form, and a key of neither form that comes back
 * is an error, not a silent new key per load.
 */

import { DhkemX25519HkdfSha256 as NativeX25519 } from '@hpke/core';

import { suite } from './index';

/** What is stored: a native key pair, or a wrapped secret. */
export type StoredKey =
  | { kind: 'native'; privateKey: CryptoKey; publicKey: Uint8Array }
  | { kind: 'wrapped'; wrappingKey: CryptoKey; iv: Uint8Array; wrapped: Uint8Array; publicKey: Uint8Array };

/** Where the key is kept (IndexedDB in the app, memory in tests). */
export interface KeyStore {
  get(): Promise<StoredKey | undefined>;
  put(key: StoredKey): Promise<void>;
}

/** The browser's key, ready for {@link sealRequest}. */
export interface BrowserKey {
  keyPair: CryptoKeyPair;
  /** The raw public key (32 bytes), registered with the desktop at pairing. */
  publicKey: Uint8Array;
  /** Whether the private key is a non-extractable WebCrypto key. */
  native: boolean;
}

async function nativeX25519(): Promise<boolean> {
  try {
    await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
    return true;
  } catch {
    return false;
  }
}

/** Loads the browser's key from `store`, making one the first time. `preferNative: false`
 * forces the wrapped form (tests). */
export async function loadOrCreateBrowserKey(store: KeyStore, preferNative = true): Promise<BrowserKey> {
  let stored = await store.get();
  if (!stored) {
    if (preferNative && (await nativeX25519())) {
      const pair = (await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits'])) as CryptoKeyPair;
      const publicKey = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
      stored = await keptBy(store, { kind: 'native', privateKey: pair.privateKey, publicKey });
    }
    if (!stored) {
      stored = await keptBy(store, await newWrappedKey());
      if (!stored) throw new Error('this browser cannot keep the end-to-end key: the stored key does not read back');
    }
  }
  if (stored.kind === 'native') {
    const kem = new NativeX25519();
    return {
      keyPair: { privateKey: stored.privateKey, publicKey: await kem.deserializePublicKey(stored.publicKey) },
      publicKey: stored.publicKey,
      native: true,
    };
  }
  const secret = new Uint8Array(
    await crypto.subtle.decrypt({ name: 'AES-GCM', iv: stored.iv as BufferSource }, stored.wrappingKey, stored.wrapped as BufferSource),
  );
  const kem = suite().kem;
  const keyPair = {
    privateKey: await kem.deserializePrivateKey(secret),
    publicKey: await kem.deserializePublicKey(stored.publicKey),
  };
  secret.fill(0);
  return { keyPair, publicKey: stored.publicKey, native: false };
}

/** A new X25519 secret from `@hpke/dhkem-x25519`, wrapped under a new non-extractable AES-GCM key. */
async function newWrappedKey(): Promise<StoredKey> {
  const kem = suite().kem;
  const pair = await kem.generateKeyPair();
  const secret = new Uint8Array(await kem.serializePrivateKey(pair.privateKey));
  const publicKey = new Uint8Array(await kem.serializePublicKey(pair.publicKey));
  const wrappingKey = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const wrapped = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, wrappingKey, secret));
  secret.fill(0);
  return { kind: 'wrapped', wrappingKey, iv, wrapped, publicKey };
}

/** Stores `key` and reads it back: the stored key when it came back whole, else `undefined`. */
async function keptBy(store: KeyStore, key: StoredKey): Promise<StoredKey | undefined> {
  await store.put(key);
  const back = await store.get().catch(() => undefined);
  const same =
    !!back &&
    back.kind === key.kind &&
    back.publicKey?.length === key.publicKey.length &&
    back.publicKey.every((b, i) => b === key.publicKey[i]) &&
    (back.kind === 'native' ? back.privateKey instanceof CryptoKey : back.wrappingKey instanceof CryptoKey);
  return same ? back : undefined;
}

/** The key kept in IndexedDB (database `aisa-e2e`, store `keys`, record `browser`). */
export function indexedDbKeyStore(name = 'aisa-e2e'): KeyStore {
  const open = (): Promise<IDBDatabase> =>
    new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore('keys');
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  const run = async <T>(mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> => {
    const db = await open();
    try {
      return await new Promise<T>((resolve, reject) => {
        const req = f(db.transaction('keys', mode).objectStore('keys'));
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
    } finally {
      db.close();
    }
  };
  return {
    get: () => run('readonly', (s) => s.get('browser') as IDBRequest<StoredKey | undefined>),
    put: async (key) => {
      await run('readwrite', (s) => s.put(key, 'browser'));
    },
  };
}
