/**
 * Two account flows for every engine (`../flows.ts` lists them with the others), so
 * WebKit and Firefox check what Chromium's main suites check:
 *
 * - `oidc` (Chromium: `oidc.test.ts`): sign-in with an identity provider. The npm
 *   `oidc-provider` (the certified implementation `oidc.test.ts` starts, with the same
 *   test client: PKCE required, a verified email) and a relay of its own configured with
 *   it in `[oidc]` are started for the flow and stopped after it. A person whose password
 *   account has the provider account's verified email clicks "Sign in with Test ID",
 *   signs in and agrees on the provider's own pages, and lands signed in to that account
 *   (the identity linked); a new page load keeps them signed in; signed out, the
 *   provider's session signs them in again without its pages. The account page's "How
 *   you sign in" lists the password and the Test ID identity; unlinking it asks for the
 *   password (a wrong one refused, the identity stays), then unlinks it.
 *   The relay's `public_url` is the address the page uses: WebKit's https front
 *   (`https.ts`, made here for this relay too) or the relay itself.
 * - `sessions` (Chromium: `webapp.test.ts`, "lists sessions and signs out everywhere"
 *   and the onboarding's password change): a new account signed up in the page, and two
 *   more sessions made by this process over HTTP (a command line's user agent). The
 *   account page lists all three, this browser marked; "End session" on one ends it
 *   (its refresh token refused); "Sign out everywhere" signs the page out and ends the
 *   other (its access token refused at once, its refresh token too), and a new page load
 *   shows the sign-in form. Signed in again, with one more HTTP session: the password
 *   changed in the page signs that session out, the old password is refused and the new
 *   one signs in; the account is deleted with it.
 *
 * Sessions made over HTTP get their refresh token in the JSON answer (the relay's
 * non-cookie clients), so this process can present it as a second browser would.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Provider from 'oidc-provider';
import type { Flow, FlowContext } from '../flows';
import { exists, markByText, poll, textOf, waitFor, waitText, type Driver } from './driver';
import { startHttpsFront, type HttpsFront } from './https';
import { writeOidcRelayConfig } from '../oidc-relay-config';

const root = resolve(__dirname, '../../../..');
const binDir = process.env.AISA_BIN_DIR ?? join(root, 'target/debug');

/** The password account the provider's verified email links to. */
const OIDC_EMAIL = 'engine-oidc@example.com';
const OIDC_PASSWORD = 'engine-oidc-password-1';
const CLIENT_ID = 'aisa-relay-engine-flow';
const CLIENT_SECRET = 'a client secret for the engine flow only';
/** What the sessions made over HTTP say they are: the account page names them "Command line". */
const HTTP_AGENT = 'curl/8.0 (aisa engine flow, a second session)';

/** Asserts `cond`, with `message` when it does not hold. */
function check(cond: boolean, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** A free TCP port on loopback (the relay's address must be known to the provider's client). */
async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** An identity provider and a relay configured with it, running for one flow. */
interface OidcSystem {
  /** The provider's issuer (`http://localhost:PORT`: another site than the relay). */
  issuer: string;
  /** The address pages load this relay from (its https front in WebKit). */
  appUrl: string;
  /** Everything the relay printed so far. */
  output(): string;
  stop(): Promise<void>;
}

/** Starts the provider, then a relay (own data, one password account) with it in `[oidc]`. */
async function startOidcSystem(ctx: FlowContext): Promise<OidcSystem> {
  const dir = mkdtempSync(join(tmpdir(), 'aisa-flow-oidc-'));
  let provider: Server | undefined;
  let front: HttpsFront | undefined;
  let relay: ChildProcess | undefined;
  let output = '';
  const stop = async (): Promise<void> => {
    if (relay && relay.exitCode === null) {
      const exited = new Promise((r) => relay!.once('exit', r));
      relay.kill('SIGINT');
      await exited;
    }
    await front?.close();
    if (provider) await new Promise((r) => provider!.close(r));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const relayPort = await freePort();
    const relayUrl = `http://127.0.0.1:${relayPort}`;
    // Where the engine loads the main system's app from an https front, it loads this
    // relay's from one too (WebKitGTK keeps the Secure cookies only from https).
    if (ctx.appUrl !== ctx.system.httpUrl) front = await startHttpsFront(relayUrl);
    const appUrl = front?.url ?? relayUrl;

    provider = createServer();
    await new Promise<void>((r) => provider!.listen(0, '127.0.0.1', r));
    const issuer = `http://localhost:${(provider.address() as AddressInfo).port}`;
    const oidc = new Provider(issuer, {
      clients: [
        {
          client_id: CLIENT_ID,
          client_secret: CLIENT_SECRET,
          redirect_uris: [`${appUrl}/api/auth/oidc/testid/callback`],
          grant_types: ['authorization_code'],
          response_types: ['code'],
          token_endpoint_auth_method: 'client_secret_basic',
        },
      ],
      // A relay that leaves PKCE out, or sends the wrong verifier, fails here.
      pkce: { required: () => true },
      claims: { openid: ['sub'], email: ['email', 'email_verified'] },
      cookies: { keys: ['engine flow cookie key, not a secret'] },
      ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600 },
      features: { devInteractions: { enabled: true } },
      async findAccount(_ctx, id) {
        if (id !== 'owner') return undefined;
        return { accountId: id, claims: async () => ({ sub: id, email: OIDC_EMAIL, email_verified: true }) };
      },
    });
    provider.on('request', oidc.callback());

    const data = join(dir, 'relay');
    execFileSync(join(binDir, 'relay-edge'), ['--data-dir', data, 'user', 'add', OIDC_EMAIL, '--password', OIDC_PASSWORD], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const config = writeOidcRelayConfig({
      dir,
      publicUrl: appUrl,
      issuer,
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
    });
    relay = spawn(
      join(binDir, 'relay-edge'),
      [
        '--config', config, '--data-dir', data, 'serve',
        '--quic-listen', '127.0.0.1:0', '--http-listen', `127.0.0.1:${relayPort}`,
        '--web-root', join(root, 'browser-client/dist'),
      ],
      { env: { ...process.env, RUST_LOG: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    relay.stdout?.on('data', (b: Buffer) => (output += b.toString()));
    relay.stderr?.on('data', (b: Buffer) => (output += b.toString()));
    await poll('the OIDC relay to start', async () => output, (o) => /relay-edge: http:\/\/\S+/.test(o) || relay!.exitCode !== null, 30_000);
    check(relay.exitCode === null, `relay-edge (with [oidc]) did not start (exit ${relay.exitCode}):\n${output}`);
    return { issuer, appUrl, output: () => output.replace(/\x1b\[[0-9;]*m/g, ''), stop };
  } catch (err) {
    await stop();
    throw new Error(`${String(err)}\n--- relay-edge (with [oidc])\n${output}`);
  }
}

/** From the relay's sign-in page (a fresh load of `appUrl`) to the provider's login page. */
async function toProvider(d: Driver, sys: OidcSystem): Promise<void> {
  await d.goto(sys.appUrl);
  await waitFor(d, '#email, #signed-in-as');
  if (await textOf(d, '#signed-in-as')) {
    await d.click(await markByText(d, 'button', 'Sign out'));
    await waitFor(d, '#email');
  }
  await d.click(await poll('the provider link', () => markByText(d, 'a', 'Sign in with Test ID'), () => true));
  await poll('the provider login page', () => d.url(), (u) => u.startsWith(sys.issuer), 15_000);
  await waitFor(d, 'input[name="login"]');
}

/** The HTTP API of the main system, as a client that is not this browser. */
async function api(ctx: FlowContext, path: string, init: { method?: string; body?: unknown; token?: string } = {}): Promise<Response> {
  const headers: Record<string, string> = { 'User-Agent': HTTP_AGENT };
  if (init.body !== undefined) headers['Content-Type'] = 'application/json';
  if (init.token) headers.Authorization = `Bearer ${init.token}`;
  return fetch(`${ctx.system.httpUrl}${path}`, {
    method: init.method ?? 'GET',
    headers,
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
}

/** A session signed in over HTTP: its access and refresh tokens. */
interface HttpSession {
  token: string;
  refresh: string;
}

/** Signs in over HTTP (not the page): a second session of `email`. */
async function httpSession(ctx: FlowContext, email: string, password: string): Promise<HttpSession> {
  const res = await api(ctx, '/api/auth/login', { method: 'POST', body: { email, password } });
  if (res.status !== 200) throw new Error(`sign-in over HTTP: HTTP ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { token: string; refresh_token: string };
  check(!!body.token && !!body.refresh_token, `no token pair in the answer: ${JSON.stringify(body)}`);
  return { token: body.token, refresh: body.refresh_token };
}

/** The status `/api/auth/refresh` answers for a session's refresh token. */
async function refreshStatus(ctx: FlowContext, s: HttpSession): Promise<number> {
  const res = await api(ctx, '/api/auth/refresh', { method: 'POST', body: { refresh_token: s.refresh } });
  if (res.status === 200) {
    // Refresh tokens work once: keep the new pair, so the session stays presentable.
    const body = (await res.json()) as { token: string; refresh_token: string };
    s.token = body.token;
    s.refresh = body.refresh_token;
  }
  return res.status;
}

/** The rows of the account page's sessions list. */
function sessionRows(d: Driver): Promise<string[]> {
  return d.evaluate<string[]>(
    `[...document.querySelectorAll('[aria-label="Sessions"] li')].map((li) => (li.textContent || '').trim())`,
  );
}

/** Signs the page up with a new account (from the sign-in form). */
async function signUp(ctx: FlowContext, email: string, password: string): Promise<void> {
  const d = ctx.driver;
  await d.goto(ctx.appUrl);
  await waitFor(d, '#email, #signed-in-as');
  if (await textOf(d, '#signed-in-as')) {
    await d.click(await markByText(d, 'button', 'Sign out'));
    await waitFor(d, '#email');
  }
  await d.fill('#email', email);
  await d.fill('#password', password);
  await d.click(await markByText(d, 'button', 'Create account'));
  await waitText(d, '#signed-in-as', `Signed in as ${email}`);
}

/** The account flows, in the order a full run takes them. */
export const ACCOUNT_FLOWS: readonly Flow[] = [
  {
    id: 'oidc',
    title:
      'signs in with an OpenID provider (its login and consent pages, PKCE), linked by verified email; stays signed in; the account page lists the identity and unlinks it with the password',
    chromiumSuite: 'oidc.test.ts',
    async run(ctx) {
      const d = ctx.driver;
      const sys = await startOidcSystem(ctx);
      try {
        const started = Date.now();
        await toProvider(d, sys);
        await d.fill('input[name="login"]', 'owner');
        await d.fill('input[name="password"]', 'any password: the test provider takes any');
        await ctx.shot('oidc-provider-login.png');
        await d.click('button.login-submit');
        await waitFor(d, 'input[name="prompt"][value="consent"]');
        check(/email/.test(await textOf(d, 'body')), `the consent page does not ask for the email: ${await textOf(d, 'body')}`);
        await ctx.shot('oidc-provider-consent.png');
        await d.click('button.login-submit');
        // Back at the relay, signed in to the password account with that email.
        await waitText(d, '#signed-in-as', `Signed in as ${OIDC_EMAIL}`, 20_000);
        console.log(`[engines] ${d.engine} oidc: sign-in through the provider's login and consent pages took ${Date.now() - started} ms`);
        check((await d.url()).startsWith(sys.appUrl), `signed in at ${await d.url()}, not on ${sys.appUrl}`);
        check(/identity linked to an account by its verified email/.test(sys.output()), 'the relay did not log the link by email');
        check(!(await d.evaluate<string>('document.cookie')).includes('aisa_refresh'), 'the page can read the refresh token');
        await ctx.shot('oidc-signed-in.png');

        // A new page load keeps the session (the same refresh cookie as a password sign-in).
        await d.goto(`${sys.appUrl}/?load=1#/account`);
        await waitText(d, '#signed-in-as', `Signed in as ${OIDC_EMAIL}`);

        // Signed out, the provider's session signs in again without its pages.
        await d.click(await markByText(d, 'button', 'Sign out'));
        await waitFor(d, '#email');
        await d.click(await poll('the provider link', () => markByText(d, 'a', 'Sign in with Test ID'), () => true));
        await waitText(d, '#signed-in-as', `Signed in as ${OIDC_EMAIL}`, 20_000);

        // "How you sign in": the password and the linked identity, which is unlinked
        // with the password (a wrong one refused first).
        // (ctx.route goes to the main system's app; this page is on the OIDC relay's.)
        await d.evaluate(`(function () { location.hash = '#/account'; })()`);
        await waitText(d, '[aria-label="Sign-in methods"]', new RegExp(`Test ID ${OIDC_EMAIL.replace(/\./g, '\\.')}`));
        const listed = await textOf(d, '[aria-label="Sign-in methods"]');
        check(listed.includes('You can sign in with your email address and password.'), `the password is not listed: ${listed}`);
        check(/Linked .+, last used .+\./.test(listed), `no linked date: ${listed}`);
        check(!listed.includes(sys.issuer), `the provider's address is shown: ${listed}`);
        await ctx.shot('oidc-sign-in-methods.png');
        await d.click(await markByText(d, '.identity-row button', /^Unlink Test ID/));
        await waitFor(d, '#unlink-password');
        await d.fill('#unlink-password', 'not the password');
        await d.click(await markByText(d, '#unlink-form button', 'Unlink Test ID'));
        await waitText(d, 'main', /The current password is wrong\./, 10_000);
        check((await textOf(d, '[aria-label="Sign-in methods"]')).includes('Test ID'), 'the identity went with a wrong password');
        await d.fill('#unlink-password', OIDC_PASSWORD);
        await d.click(await markByText(d, '#unlink-form button', 'Unlink Test ID'));
        await waitText(d, '#identity-unlinked', `Test ID (${OIDC_EMAIL}) is unlinked: it no longer signs you in to this account.`, 10_000);
        await waitFor(d, '#no-identities');
        check(/identity unlinked.*provider=testid/.test(sys.output()), 'the relay did not log the unlink');
        await ctx.shot('oidc-identity-unlinked.png');
        // Signed out here, so this relay's refresh cookie (same host as the main
        // system's in the browser's cookie jar) is gone before the next flow.
        await d.click(await markByText(d, 'button', 'Sign out'));
        await waitFor(d, '#email');
      } finally {
        await sys.stop();
      }
    },
  },
  {
    id: 'sessions',
    title:
      'lists the sessions (two made over HTTP), ends one, signs out everywhere, changes the password (other sessions signed out) and deletes the account',
    chromiumSuite: 'webapp.test.ts (sessions and sign out everywhere; onboarding: password, deletion)',
    async run(ctx) {
      const d = ctx.driver;
      const email = `sessions-${Date.now()}@example.com`;
      const password = 'sessions-password-1';
      const changed = 'sessions-password-2';
      await signUp(ctx, email, password);
      const first = await httpSession(ctx, email, password);
      const second = await httpSession(ctx, email, password);

      await ctx.route('#/account');
      const rows = await poll('three sessions in the list', () => sessionRows(d), (r) => r.length === 3);
      check(rows.filter((r) => r.includes('this browser')).length === 1, `not one "this browser" row: ${JSON.stringify(rows)}`);
      check(rows.filter((r) => r.startsWith('Command line')).length === 2, `the HTTP sessions are not named "Command line": ${JSON.stringify(rows)}`);
      await ctx.shot('sessions-list.png');

      // End one of the other sessions from the list.
      await d.click(await markByText(d, '[aria-label="Sessions"] button', /^End the session of Command line/));
      await poll('two sessions left', () => sessionRows(d), (r) => r.length === 2);
      // Which one went: exactly one of the two refresh tokens is refused now.
      const statuses = [await refreshStatus(ctx, first), await refreshStatus(ctx, second)];
      check(statuses.filter((s) => s === 401).length === 1 && statuses.includes(200), `refresh after ending one session: ${statuses}`);
      const other = statuses[0] === 200 ? first : second;

      // Sign out everywhere: this page, and the other session at once.
      check((await api(ctx, '/api/auth/sessions', { token: other.token })).status === 200, 'the other session does not work before');
      await d.click(await markByText(d, 'button', 'Sign out everywhere'));
      await waitFor(d, '#email');
      // The page shows the sign-in form first and then tells the relay, so give that
      // request a moment; from then on the other session's access token is refused.
      await poll(
        "the other session's access token to be refused",
        async () => (await api(ctx, '/api/auth/sessions', { token: other.token })).status,
        (status) => status === 401,
        5_000,
      );
      check((await refreshStatus(ctx, other)) === 401, "the other session's refresh token still works");
      await d.goto(`${ctx.appUrl}/?load=everywhere#/account`);
      await waitFor(d, '#email');
      check(!(await exists(d, '#signed-in-as')), 'a new page load is still signed in');
      await ctx.shot('sessions-signed-out-everywhere.png');

      // Signed in again: changing the password signs the other session out.
      await d.fill('#email', email);
      await d.fill('#password', password);
      await d.press('#password', 'Enter');
      await waitText(d, '#signed-in-as', `Signed in as ${email}`);
      const third = await httpSession(ctx, email, password);
      await ctx.route('#/account');
      await waitFor(d, '#current-password');
      await d.fill('#current-password', password);
      await d.fill('#new-password', changed);
      await d.click(await markByText(d, 'form[aria-labelledby="password-title"] button', 'Change the password'));
      await waitText(d, '#password-changed', /^Password changed\./);
      check((await refreshStatus(ctx, third)) === 401, 'the other session survived the password change');
      const old = await api(ctx, '/api/auth/login', { method: 'POST', body: { email, password } });
      check(old.status === 401, `the old password still signs in (HTTP ${old.status})`);
      await httpSession(ctx, email, changed);
      await waitText(d, '#signed-in-as', `Signed in as ${email}`);
      await ctx.shot('sessions-password-changed.png');

      // Delete the account (the new password as proof), so nothing of it stays.
      await d.click(await poll('the delete button', () => markByText(d, 'button', 'Delete the account…'), () => true));
      await waitFor(d, '#delete-password');
      await d.fill('#delete-password', changed);
      await d.click(await markByText(d, 'button', 'Delete my account'));
      await waitFor(d, '#email');
      const gone = await api(ctx, '/api/auth/login', { method: 'POST', body: { email, password: changed } });
      check(gone.status === 401, `the deleted account still signs in (HTTP ${gone.status})`);
    },
  },
];
