/**
 * The relay configuration the OpenID Connect tests start it with (oidc.test.ts and the
 * engines' `oidc` flow): one provider, "Test ID", whose client secret is read from a
 * file, as an operator would give it.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Where the relay and its provider are, and the client the provider knows it as. */
export interface OidcRelayConfig {
  /** A folder of the test's own: the secret and the configuration are written there. */
  dir: string;
  /** The origin the browser opens the web app at (`[oidc] public_url`). */
  publicUrl: string;
  /** The provider's issuer URL. */
  issuer: string;
  /** The relay's client id at the provider. */
  clientId: string;
  /** Its client secret (written to `client-secret`, mode 0600). */
  clientSecret: string;
}

/** Writes `relay.toml` (and the client secret beside it) into `dir`; returns its path. */
export function writeOidcRelayConfig(c: OidcRelayConfig): string {
  const secretFile = join(c.dir, 'client-secret');
  writeFileSync(secretFile, `${c.clientSecret}\n`, { mode: 0o600 });
  const config = join(c.dir, 'relay.toml');
  writeFileSync(
    config,
    [
      '[oidc]',
      `public_url = "${c.publicUrl}"`,
      '[[oidc.providers]]',
      'name = "testid"',
      'display_name = "Test ID"',
      `issuer = "${c.issuer}"`,
      `client_id = "${c.clientId}"`,
      `client_secret_file = ${JSON.stringify(secretFile)}`,
      '',
    ].join('\n'),
  );
  return config;
}
