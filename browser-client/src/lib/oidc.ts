/**
 * Sign-in with an identity provider (OpenID Connect), the page's side: the providers
 * the relay offers (`GET /api/auth/oidc/providers`; each button is a plain link to the
 * relay's start URL, which sends the browser to the provider), and the sentence for a
 * sign-in that came back refused (`/?oidc_error=<code>`).
 *
 * The relay does the whole flow (PKCE, state, nonce, the ID token's checks) and, on
 * success, sets the same refresh cookie as a password sign-in: the page then restores
 * the session as after a reload. Nothing here holds a token.
 */

/** One configured provider. */
export interface OidcProvider {
  /** The name in the URLs. */
  name: string;
  /** The name on the button. */
  display_name: string;
  /** Where the button goes (on the relay). */
  start_url: string;
}

/** Sentences by the relay's `oidc_error` code. */
const SENTENCES: Record<string, string> = {
  denied: 'Sign-in was cancelled at the identity provider. Nothing was shared with this relay. Try again, or sign in with your email and password.',
  state:
    'That sign-in link was not started in this browser, or it was already used. Start again with the button below.',
  expired: 'The sign-in took too long and expired. Start again with the button below.',
  unverified_email:
    'The identity provider has not verified your email address, so it cannot be used to sign in here. Verify the address with the provider, or sign in with your email and password.',
  no_email:
    'The identity provider did not share an email address, so there is no account to sign in to. Allow sharing your email when the provider asks, or sign in with your email and password.',
  signup_closed:
    'There is no account with the email address your identity provider gave, and this relay does not take new sign-ups. Ask its operator for an account.',
  disabled: 'This account is disabled. Ask the relay’s operator.',
  unknown_provider: 'This relay does not offer that identity provider any more. Choose another way to sign in.',
  unreachable: 'The identity provider could not be reached. Try again in a moment, or sign in with your email and password.',
  provider_error: 'The identity provider could not complete the sign-in. Try again in a moment.',
  failed: 'Signing in with the identity provider did not work. Try again; if it keeps failing, tell the relay’s operator.',
};

/** The sentence for an `oidc_error` code (an unknown code gets the general one). */
export function oidcErrorSentence(code: string): string {
  return SENTENCES[code] ?? SENTENCES.failed!;
}

/**
 * The `oidc_error` code in the page's URL, if any, removed from the address bar so that
 * a reload does not show it again.
 */
export function takeOidcError(
  location: Pick<Location, 'search' | 'pathname' | 'hash'>,
  replace: (url: string) => void,
): string | null {
  const params = new URLSearchParams(location.search);
  const code = params.get('oidc_error');
  if (code === null) return null;
  params.delete('oidc_error');
  const rest = params.toString();
  replace(`${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
  return code;
}

/** The providers the relay offers; none when it offers none or cannot say. */
export async function fetchOidcProviders(fetchFn: typeof fetch = (...a) => fetch(...a)): Promise<OidcProvider[]> {
  try {
    const res = await fetchFn('/api/auth/oidc/providers', { headers: { Accept: 'application/json' } });
    if (!res.ok) return [];
    const body: unknown = await res.json();
    if (!body || typeof body !== 'object' || !('providers' in body) || !Array.isArray(body.providers)) return [];
    return (body.providers as unknown[]).filter(
      (p): p is OidcProvider =>
        !!p &&
        typeof p === 'object' &&
        typeof (p as OidcProvider).name === 'string' &&
        typeof (p as OidcProvider).display_name === 'string' &&
        typeof (p as OidcProvider).start_url === 'string' &&
        (p as OidcProvider).start_url.startsWith('/api/auth/oidc/'),
    );
  } catch {
    return [];
  }
}
