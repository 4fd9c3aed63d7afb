/**
 * The account page's sign-in methods: a provider identity named safely (control and
 * direction-changing characters out, long text cut, the email or else only the end of
 * the provider's id), the last way in recognised, and the API calls the page makes to
 * list and unlink (the relay's 409 read as its sentence). The whole flow runs in
 * Chromium in test/browser/oidc.test.ts.
 */

import { describe, expect, it } from 'vitest';
import { identityLabel, identityWho, isLastWayIn, MAX_SHOWN, shownText, type LinkedIdentity } from '../../src/lib/account';
import { Api, ApiError, type LoginResponse } from '../../src/lib/api';
import { humanError } from '../../src/lib/errors';

const identity: LinkedIdentity = {
  id: '0123456789abcdef0123456789abcdef',
  provider: 'corp',
  provider_name: 'Example Corp',
  email: 'ann@example.com',
  subject_hint: '…1001',
  linked_at: 1_800_000_000,
  last_used: 1_800_000_100,
};

describe('sign-in methods on the account page', () => {
  it('name an identity by its email, else by the end of its id at the provider', () => {
    expect(identityWho(identity)).toBe('ann@example.com');
    expect(identityLabel(identity)).toBe('Example Corp (ann@example.com)');
    expect(identityWho({ ...identity, email: null })).toBe('account …1001');
    expect(identityWho({ ...identity, email: '', subject_hint: '' })).toBe('an account without an email address');
  });

  it('tell two identities at one provider with one email apart by the end of their ids', () => {
    // A second identity links by the account's verified email: the same email, usually.
    const second = { ...identity, id: 'second', subject_hint: '…2002' };
    const both = [identity, second];
    expect(identityLabel(identity, both)).toBe('Example Corp (ann@example.com, account …1001)');
    expect(identityLabel(second, both)).toBe('Example Corp (ann@example.com, account …2002)');
    // Another provider, or another email, needs no more than the email.
    const elsewhere = { ...second, provider: 'google', provider_name: 'Google' };
    expect(identityLabel(identity, [identity, elsewhere])).toBe('Example Corp (ann@example.com)');
    expect(identityWho(identity, [identity, { ...second, email: 'bob@example.com' }])).toBe('ann@example.com');
  });

  it('show provider text without reordering or control characters, and cut long text', () => {
    // "ann@example.com" that a right-to-left override would show as another address.
    expect(shownText('moc.elpmaxe@\u202Enna')).toBe('moc.elpmaxe@nna');
    expect(shownText('a\u0000b\nc\u2066d\u200Fe')).toBe('abcde');
    expect(shownText(null)).toBe('');
    const long = 'x'.repeat(200);
    expect(Array.from(shownText(long))).toHaveLength(MAX_SHOWN);
    expect(shownText(long).endsWith('…')).toBe(true);
    expect(identityLabel({ ...identity, provider_name: 'Bad\u202EName', email: null, subject_hint: '…\u0007abc' })).toBe(
      'BadName (account …abc)',
    );
  });

  it('know the last way in: no password and one identity', () => {
    expect(isLastWayIn({ has_password: false, identities: [identity] })).toBe(true);
    expect(isLastWayIn({ has_password: true, identities: [identity] })).toBe(false);
    expect(isLastWayIn({ has_password: false, identities: [identity, { ...identity, id: 'other' }] })).toBe(false);
  });

  it('list and unlink through the relay, and read its refusal as a sentence', async () => {
    const login: LoginResponse = { token: 't1', refresh_token: 'r1', expires_in: 900, user_id: 'u1', email: 'o@example.com' };
    const calls: { path: string; method: string; body: unknown }[] = [];
    const fetchFn = (async (path: string, init: RequestInit) => {
      calls.push({ path, method: init.method ?? 'GET', body: init.body ? JSON.parse(init.body as string) : null });
      if (path === '/api/auth/login') return new Response(JSON.stringify(login), { status: 200 });
      if (path === '/api/account/identities') {
        return new Response(JSON.stringify({ has_password: false, identities: [identity] }), { status: 200 });
      }
      return new Response(
        JSON.stringify({
          error:
            'this is the only way left to sign in to this account: set a password or link another provider first, then unlink this one',
          code: 'last_sign_in_method',
        }),
        { status: 409 },
      );
    }) as unknown as typeof fetch;
    const api = new Api(fetchFn);
    await api.signIn('login', 'o@example.com', 'x');
    expect(await api.signInMethods()).toEqual({ has_password: false, identities: [identity] });
    const err = await api.unlinkIdentity('a/b', null).catch((e: unknown) => e);
    expect(calls.at(-1)).toEqual({ path: '/api/account/identities/a%2Fb', method: 'DELETE', body: {} });
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).reason?.code).toBe('last_sign_in_method');
    expect(humanError(err).sentence).toBe(
      'This is the only way left to sign in to this account: set a password or link another provider first, then unlink this one.',
    );
    await api.unlinkIdentity(identity.id, 'pw').catch(() => undefined);
    expect(calls.at(-1)).toEqual({
      path: `/api/account/identities/${identity.id}`,
      method: 'DELETE',
      body: { password: 'pw' },
    });
  });
});
