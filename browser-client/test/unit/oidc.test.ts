import { describe, expect, it } from 'vitest';
import { fetchOidcProviders, oidcErrorSentence, takeOidcError } from '../../src/lib/oidc';

describe('sign-in with an identity provider', () => {
  it('turns every code the relay sends into a sentence, and an unknown one into the general one', () => {
    const codes = [
      'denied',
      'state',
      'expired',
      'unverified_email',
      'no_email',
      'signup_closed',
      'disabled',
      'unknown_provider',
      'unreachable',
      'provider_error',
      'failed',
    ];
    const sentences = new Set(codes.map(oidcErrorSentence));
    expect(sentences.size).toBe(codes.length);
    for (const s of sentences) expect(s).toMatch(/^[A-Z].*\.$/);
    expect(oidcErrorSentence('unverified_email')).toContain('not verified your email');
    expect(oidcErrorSentence('<script>')).toBe(oidcErrorSentence('failed'));
  });

  it('takes the error out of the address, keeping the rest', () => {
    const replaced: string[] = [];
    const code = takeOidcError({ search: '?a=1&oidc_error=denied', pathname: '/', hash: '#/devices' }, (u) =>
      replaced.push(u),
    );
    expect(code).toBe('denied');
    expect(replaced).toEqual(['/?a=1#/devices']);
    expect(takeOidcError({ search: '', pathname: '/', hash: '' }, (u) => replaced.push(u))).toBeNull();
    expect(replaced).toHaveLength(1);
  });

  it('lists only well-formed providers that start on the relay, and none on failure', async () => {
    const answer = (body: unknown, status = 200): typeof fetch =>
      (async () => new Response(JSON.stringify(body), { status })) as typeof fetch;
    const good = { name: 'id', display_name: 'Example ID', start_url: '/api/auth/oidc/id/start' };
    const list = await fetchOidcProviders(
      answer({
        providers: [good, { name: 'x', display_name: 'X', start_url: 'https://evil.example/' }, { name: 1 }],
      }),
    );
    expect(list).toEqual([good]);
    expect(await fetchOidcProviders(answer({ error: 'no' }, 404))).toEqual([]);
    expect(await fetchOidcProviders(answer('not json'))).toEqual([]);
    const offline = (async () => {
      throw new TypeError('offline');
    }) as typeof fetch;
    expect(await fetchOidcProviders(offline)).toEqual([]);
  });
});
