/**
 * The account page's logic for accounts without a password: how long a provider
 * sign-in counts as proof, where confirming starts, and the relay's `reauth_required`
 * refusal read from the API (the whole flow runs in Chromium in
 * test/browser/oidc.test.ts).
 */

import { describe, expect, it } from 'vitest';
import { proofSecondsLeft, reauthHref } from '../../src/components/Account';
import { Api, ApiError, type LoginResponse } from '../../src/lib/api';

const login: LoginResponse = { token: 't1', refresh_token: 'r1', expires_in: 900, user_id: 'u1', email: 'o@example.com' };

describe('accounts without a password', () => {
  it('count a provider sign-in as proof for the relay’s window only', () => {
    expect(proofSecondsLeft({ auth_time: 1_000, reauth_max_age_secs: 300 }, 1_000)).toBe(300);
    expect(proofSecondsLeft({ auth_time: 1_000, reauth_max_age_secs: 300 }, 1_299)).toBe(1);
    expect(proofSecondsLeft({ auth_time: 1_000, reauth_max_age_secs: 300 }, 1_300)).toBe(0);
    expect(proofSecondsLeft({ auth_time: 1_000, reauth_max_age_secs: 300 }, 9_000)).toBe(0);
    expect(proofSecondsLeft({ auth_time: null, reauth_max_age_secs: 300 }, 1_000)).toBe(0);
    expect(proofSecondsLeft({}, 1_000)).toBe(0);
  });

  it('confirm at the provider through the relay’s start URL with reauth=1', () => {
    expect(reauthHref({ start_url: '/api/auth/oidc/corp/start' })).toBe('/api/auth/oidc/corp/start?reauth=1');
  });

  it('set a password without a current one, and read the relay’s reauth_required refusal', async () => {
    const bodies: unknown[] = [];
    const fetchFn = (async (path: string, init: RequestInit) => {
      const body = init.body ? JSON.parse(init.body as string) : null;
      bodies.push({ path, body });
      if (path === '/api/auth/login') return new Response(JSON.stringify(login), { status: 200 });
      return new Response(
        JSON.stringify({
          error: 'this account has no password: sign in with Corp again to confirm it is you, then try again within 5 minutes',
          code: 'reauth_required',
          providers: ['corp', 7],
          max_age_secs: 300,
        }),
        { status: 403 },
      );
    }) as unknown as typeof fetch;
    const api = new Api(fetchFn);
    await api.signIn('login', 'o@example.com', 'x');
    const err = await api.changePassword(null, 'a new password').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(403);
    expect((err as ApiError).reason).toEqual({ code: 'reauth_required', providers: ['corp'] });
    expect(bodies.at(-1)).toEqual({ path: '/api/account/password', body: { new_password: 'a new password', cookie: true } });
    await api.deleteAccount(null).catch(() => undefined);
    expect(bodies.at(-1)).toEqual({ path: '/api/account', body: {} });
    await api.deleteAccount('pw').catch(() => undefined);
    expect(bodies.at(-1)).toEqual({ path: '/api/account', body: { password: 'pw' } });
  });
});
