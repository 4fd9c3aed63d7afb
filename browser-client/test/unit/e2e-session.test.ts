/** src/e2e/session.ts: fingerprints as Rust computes them, and the paired-desktop memory. */

import { describe, expect, it } from 'vitest';

import type { KeyStore, StoredKey } from '../../src/e2e/keystore';
import { completePairing, e2eKeysFor, fingerprint } from '../../src/e2e/session';
import { RemoteError, type RelayClient } from '../../src/tunnel/client';
import { fromHex } from '../../src/tunnel/codec';

describe('e2e session helpers', () => {
  it('fingerprints like aisa_crypto::fingerprint', async () => {
    // The value crypto/src/lib.rs tests for 32 zero bytes.
    expect(await fingerprint(new Uint8Array(32))).toBe('6668:7aad:f862:bd77:6c8f:c18b:8e9f:8e20');
  });

  it('gives keys only for paired devices', async () => {
    const items = new Map<string, string>();
    const store = { getItem: (k: string) => items.get(k) ?? null, setItem: (k: string, v: string) => void items.set(k, v) };
    let value: StoredKey | undefined;
    const keys: KeyStore = { get: async () => value, put: async (k) => void (value = k) };
    expect(await e2eKeysFor('dev-1', keys, store)).toBeNull();
    items.set('aisa-e2e-paired', JSON.stringify({ 'dev-1': '00'.repeat(31) + '09' }));
    const k = await e2eKeysFor('dev-1', keys, store);
    expect(k?.desktopPk).toEqual(fromHex('00'.repeat(31) + '09'));
    expect(k?.browserPk.length).toBe(32);
    expect(k?.fingerprint).toMatch(/^([0-9a-f]{4}:){7}[0-9a-f]{4}$/);
  });
});

describe('completePairing', () => {
  const href = 'http://localhost:8080/#pair=dev-1.' + '00'.repeat(31) + '09.0a0b0c0d';

  function stores() {
    const items = new Map<string, string>();
    const store = { getItem: (k: string) => items.get(k) ?? null, setItem: (k: string, v: string) => void items.set(k, v) };
    let value: StoredKey | undefined;
    const keys: KeyStore = { get: async () => value, put: async (k) => void (value = k) };
    return { items, store, keys };
  }

  it('pairs through the client with this browser key, then remembers the desktop', async () => {
    const { items, store, keys } = stores();
    const calls: { link: { deviceId: string; secret: Uint8Array }; token: string; browserPk: Uint8Array; name: string }[] = [];
    const client = { pair: async (req: (typeof calls)[number]) => void calls.push(req) } as unknown as RelayClient;
    const done = await completePairing(client, 'jwt', href, 'laptop', keys, store);
    expect(done?.deviceId).toBe('dev-1');
    expect(done?.fingerprint).toBe(await fingerprint(fromHex('00'.repeat(31) + '09')));
    expect(calls[0]?.token).toBe('jwt');
    expect(calls[0]?.name).toBe('laptop');
    expect(calls[0]?.link.secret).toEqual(fromHex('0a0b0c0d'));
    // The key it registered is the one later actions use.
    const k = await e2eKeysFor('dev-1', keys, store);
    expect(k?.browserPk).toEqual(calls[0]?.browserPk);
    expect(JSON.parse(items.get('aisa-e2e-paired')!)).toEqual({ 'dev-1': '00'.repeat(31) + '09' });
  });

  it('remembers nothing when the desktop refuses, and ignores pages without a link', async () => {
    const { items, store, keys } = stores();
    const client = {
      pair: async () => {
        throw new RemoteError('denied', 'the pairing link is not valid');
      },
    } as unknown as RelayClient;
    await expect(completePairing(client, 'jwt', href, 'x', keys, store)).rejects.toThrow(/not valid/);
    expect(items.size).toBe(0);
    expect(await completePairing(client, 'jwt', 'http://localhost/#/', 'x', keys, store)).toBeNull();
  });
});
