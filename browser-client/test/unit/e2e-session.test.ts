/** src/e2e/session.ts: fingerprints as Rust computes them, and the paired-desktop memory. */

import { describe, expect, it } from 'vitest';

import type { KeyStore, StoredKey } from '../../src/e2e/keystore';
import { e2eKeysFor, fingerprint } from '../../src/e2e/session';
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
