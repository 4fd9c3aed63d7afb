/**
 * Sign-in with an identity provider, in real Chromium against a real OpenID provider:
 * the npm `oidc-provider` (a certified implementation), started here on loopback with a
 * test client (PKCE required) and three accounts, and a real relay configured with it in
 * `[oidc]` (the client secret from a file).
 *
 * The provider's issuer is `http://localhost:…` and the relay is `http://127.0.0.1:…`:
 * two sites, so the callback is a cross-site navigation as with a real provider (the
 * relay's flow cookie must be `SameSite=Lax` to come along).
 *
 * - A person with a password account signs in with the provider (its login and consent
 *   pages), whose verified email is that account's: the identity is linked, the person
 *   lands signed in to that account, and a reload keeps them signed in (the same refresh
 *   cookie as a password sign-in). Next time the provider's session signs in at once.
 * - A verified provider account no relay account has makes a new account.
 * - A provider account whose email is unverified but names an existing account is
 *   refused, with a sentence on the sign-in page; nothing is signed in.
 * - Cancelling at the provider, and a callback whose state is not this browser's, come
 *   back as sentences.
 * - An account the provider made (no password) sets a password: refused until the person
 *   signs in at the provider again ("Sign in again with Test ID": prompt=login,
 *   max_age=0, the provider's login page once more), then set, and the person signs in
 *   with email and password.
 * - Another such account, with a desktop added by `desktop-node login`, deletes itself
 *   after signing in at the provider again: its device goes with it.
 * - The account page lists how an account signs in (its password, the linked Test ID
 *   identity with its email and date) and unlinks the identity, with the keyboard: the
 *   password asked for, a wrong one refused, the right one unlinks it.
 * - An account with no password and one identity is refused, in a sentence, when it
 *   tries to unlink that last way in; the identity stays. A second login at the
 *   provider with the same verified email links a second identity (the two told apart
 *   by the end of their ids); unlinking one is refused until the person signs in at the
 *   provider again ("Sign in again with Test ID"), then done, leaving the last way in.
 *
 * Screenshots: browser-client/test-artifacts/oidc-*.png (test-artifacts/firefox/ in Firefox).
 */

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Provider from 'oidc-provider';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS, ENGINE_LABEL, launchChromium, type ChromiumPage } from './chromium';
import { writeOidcRelayConfig } from './oidc-relay-config';

const root = resolve(__dirname, '../../..');
const binDir = process.env.AISA_BIN_DIR ?? join(root, 'target/debug');

/** The password account the verified provider account links to. */
const OWNER = 'oidc-owner@example.com';
/** The password account an unverified provider account claims. */
const VICTIM = 'oidc-victim@example.com';
/** A verified provider account no relay account has: a new account is made. */
const NEWCOMER = 'oidc-newcomer@example.com';
/** Accounts the provider makes that set a password, and delete themselves. */
const SETTER = 'oidc-setter@example.com';
const LEAVER = 'oidc-leaver@example.com';
/** A password account that links the provider, then unlinks it on the account page. */
const UNLINKER = 'oidc-unlinker@example.com';
/**
 * An account the provider makes (no password) that tries to unlink its only way in;
 * then a second login at the provider (`solo2`, the same verified email) links to it,
 * and one of the two is unlinked after a fresh sign-in at the provider.
 */
const SOLO = 'oidc-solo@example.com';
const PASSWORD = 'oidc-password-123';
const CLIENT_ID = 'aisa-relay-test';
const CLIENT_SECRET = 'a client secret for the browser test only';

/** The provider's accounts, by the login typed on its login page. */
const ACCOUNTS: Record<string, { email: string; email_verified: boolean }> = {
  owner: { email: OWNER, email_verified: true },
  squatter: { email: VICTIM, email_verified: false },
  newcomer: { email: NEWCOMER, email_verified: true },
  setter: { email: SETTER, email_verified: true },
  leaver: { email: LEAVER, email_verified: true },
  unlinker: { email: UNLINKER, email_verified: true },
  solo: { email: SOLO, email_verified: true },
  solo2: { email: SOLO, email_verified: true },
};

let dir: string;
let provider: Server;
let issuer: string;
let relay: ChildProcess;
let relayOutput = '';
let relayUrl: string;
let chromium: ChromiumPage;

/** A free TCP port on loopback (the relay's URL must be known to the provider's client). */
async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

function relayEdge(args: string[]): string {
  return execFileSync(join(binDir, 'relay-edge'), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'aisa-oidc-test-'));
  const relayPort = await freePort();
  relayUrl = `http://127.0.0.1:${relayPort}`;

  // The provider: listening first, so that its issuer names its port.
  provider = createServer();
  await new Promise<void>((r) => provider.listen(0, '127.0.0.1', r));
  issuer = `http://localhost:${(provider.address() as AddressInfo).port}`;
  const oidc = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: [`${relayUrl}/api/auth/oidc/testid/callback`],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    // A relay that leaves PKCE out, or sends the wrong verifier, fails here.
    pkce: { required: () => true },
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    cookies: { keys: ['browser test cookie key, not a secret'] },
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600 },
    features: { devInteractions: { enabled: true } },
    async findAccount(_ctx, id) {
      const account = ACCOUNTS[id];
      if (!account) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...account }) };
    },
  });
  provider.on('request', oidc.callback());

  // The relay: two password accounts, and the provider in `[oidc]`.
  const data = join(dir, 'relay');
  relayEdge(['--data-dir', data, 'user', 'add', OWNER, '--password', PASSWORD]);
  relayEdge(['--data-dir', data, 'user', 'add', VICTIM, '--password', PASSWORD]);
  relayEdge(['--data-dir', data, 'user', 'add', UNLINKER, '--password', PASSWORD]);
  const config = writeOidcRelayConfig({
    dir,
    publicUrl: relayUrl,
    issuer,
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
  });
  relay = spawn(
    join(binDir, 'relay-edge'),
    [
      '--config',
      config,
      '--data-dir',
      data,
      'serve',
      '--quic-listen',
      '127.0.0.1:0',
      '--http-listen',
      `127.0.0.1:${relayPort}`,
      '--web-root',
      join(root, 'browser-client/dist'),
    ],
    { env: { ...process.env, RUST_LOG: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  relay.stdout?.on('data', (d: Buffer) => (relayOutput += d.toString()));
  relay.stderr?.on('data', (d: Buffer) => (relayOutput += d.toString()));
  const deadline = Date.now() + 30_000;
  while (!/relay-edge: http:\/\/\S+/.test(relayOutput)) {
    if (relay.exitCode !== null || Date.now() > deadline) {
      throw new Error(`relay-edge did not start (exit ${relay.exitCode}):\n${relayOutput}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  chromium = await launchChromium('oidc-failure.png', () => `--- relay-edge\n${relayOutput}`);
});

afterAll(async () => {
  await chromium?.close();
  if (relay && relay.exitCode === null) {
    const exited = new Promise((r) => relay.once('exit', r));
    relay.kill('SIGINT');
    await exited;
  }
  await new Promise((r) => provider?.close(r));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const explained = <T>(what: () => Promise<T>): Promise<T> => chromium.explained(what);
const shot = (p: Page, name: string) =>
  p.screenshot({ path: join(ARTIFACTS, name), fullPage: true });

/** A fresh browser profile (no cookies at the relay or the provider). */
async function freshPage(): Promise<Page> {
  const context = await chromium.browser.newContext({ viewport: { width: 1200, height: 900 } });
  const p = await context.newPage();
  p.on('console', (m) => chromium.consoleLines.push(`ctx ${m.type()}: ${m.text()}`));
  p.on('pageerror', (e) => chromium.consoleLines.push(`ctx pageerror: ${e.message}`));
  return p;
}

/** From the relay's sign-in page to the provider's login page. */
async function toProvider(p: Page): Promise<void> {
  await p.goto(relayUrl);
  await p.getByRole('link', { name: 'Sign in with Test ID' }).click();
  await p.waitForURL((u) => u.origin === issuer);
  await p.waitForSelector('input[name="login"]');
}

/** Signs in on the provider's login page as `login`, then agrees on its consent page. */
async function atProvider(p: Page, login: string): Promise<void> {
  await p.fill('input[name="login"]', login);
  await p.fill('input[name="password"]', 'any password: the test provider takes any');
  await shot(p, `oidc-provider-login-${login}.png`);
  await p.click('button.login-submit');
  await p.waitForSelector('input[name="prompt"][value="consent"]', { state: 'attached' });
  expect(await p.textContent('body')).toContain('email');
  await shot(p, `oidc-provider-consent-${login}.png`);
  await p.click('button.login-submit');
}

describe(`sign-in with an identity provider (${ENGINE_LABEL}, oidc-provider)`, () => {
  it('lists the configured provider on a small public endpoint', async () => {
    const res = await fetch(`${relayUrl}/api/auth/oidc/providers`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      providers: [{ name: 'testid', display_name: 'Test ID', start_url: '/api/auth/oidc/testid/start' }],
    });
  });

  it('signs in through the provider’s login and consent pages, linked by verified email, and stays signed in on reload', () =>
    explained(async () => {
      const p = await freshPage();
      const started = Date.now();
      await toProvider(p);
      await atProvider(p, 'owner');
      // Back at the relay, signed in to the password account with that email.
      await p.waitForSelector('#signed-in-as', { timeout: 20_000 });
      console.log(`flow oidc sign-in (login + consent): ${Date.now() - started} ms`);
      expect(new URL(p.url()).origin).toBe(relayUrl);
      expect(await p.textContent('#signed-in-as')).toBe(`Signed in as ${OWNER}`);
      await shot(p, 'oidc-signed-in.png');
      // The same session as a password sign-in: the HttpOnly refresh cookie, and the
      // flow cookie gone.
      const cookies = await p.context().cookies(relayUrl + '/api/auth/refresh');
      const refresh = cookies.find((c) => c.name === 'aisa_refresh');
      expect(refresh?.httpOnly).toBe(true);
      expect(refresh?.sameSite).toBe('Strict');
      const all = await p.context().cookies(relayUrl + '/api/auth/oidc/testid/callback');
      expect(all.find((c) => c.name === 'aisa_oidc')).toBeUndefined();
      expect(await p.evaluate(() => document.cookie)).not.toContain('aisa_refresh');

      await p.reload();
      await p.waitForSelector('#signed-in-as');
      expect(await p.textContent('#signed-in-as')).toBe(`Signed in as ${OWNER}`);

      // Signed out, the provider's session signs in again without its pages, to the
      // same (now linked) account.
      await p.getByRole('button', { name: 'Sign out' }).click();
      await p.waitForSelector('#email');
      await p.getByRole('link', { name: 'Sign in with Test ID' }).click();
      await p.waitForSelector('#signed-in-as', { timeout: 20_000 });
      expect(await p.textContent('#signed-in-as')).toBe(`Signed in as ${OWNER}`);
      expect(relayOutput).toContain('identity linked to an account by its verified email');
      await p.context().close();

      // The password still works for that account.
      const login = await fetch(`${relayUrl}/api/auth/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ email: OWNER, password: PASSWORD }),
      });
      expect(login.status).toBe(200);
    }));

  it('makes a new account for a verified email no account has', () =>
    explained(async () => {
      const p = await freshPage();
      await toProvider(p);
      await atProvider(p, 'newcomer');
      await p.waitForSelector('#signed-in-as', { timeout: 20_000 });
      expect(await p.textContent('#signed-in-as')).toBe(`Signed in as ${NEWCOMER}`);
      await p.reload();
      await p.waitForSelector('#signed-in-as');
      // It has no password: only the provider opens it.
      const login = await fetch(`${relayUrl}/api/auth/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ email: NEWCOMER, password: '' }),
      });
      expect(login.status).toBe(401);
      await p.context().close();
    }));

  it('refuses to link an unverified email to the existing account it names, with a sentence', () =>
    explained(async () => {
      const p = await freshPage();
      await toProvider(p);
      await atProvider(p, 'squatter');
      await p.waitForSelector('#provider-error', { timeout: 20_000 });
      expect(new URL(p.url()).origin).toBe(relayUrl);
      expect(await p.textContent('#provider-error')).toContain(
        'The identity provider has not verified your email address',
      );
      expect(p.url()).not.toContain('oidc_error');
      await shot(p, 'oidc-unverified-refused.png');
      expect(await p.$('#signed-in-as')).toBeNull();
      const cookies = await p.context().cookies(relayUrl + '/api/auth/refresh');
      expect(cookies.find((c) => c.name === 'aisa_refresh')).toBeUndefined();
      // A reload shows the plain sign-in page: nothing was signed in.
      await p.reload();
      await p.waitForSelector('#email');
      expect(await p.$('#signed-in-as')).toBeNull();
      expect(await p.$('#provider-error')).toBeNull();
      await p.context().close();
    }));

  it('brings a cancel at the provider and a forged callback back as sentences', () =>
    explained(async () => {
      const p = await freshPage();
      await toProvider(p);
      await p.getByRole('link', { name: '[ Cancel ]' }).click();
      await p.waitForSelector('#provider-error', { timeout: 20_000 });
      expect(await p.textContent('#provider-error')).toContain('Sign-in was cancelled at the identity provider');
      await shot(p, 'oidc-cancelled.png');

      // A callback with a state this browser did not start (login CSRF) is refused.
      await p.goto(`${relayUrl}/api/auth/oidc/testid/callback?code=stolen&state=forged`);
      await p.waitForSelector('#provider-error');
      expect(await p.textContent('#provider-error')).toContain('was not started in this browser');
      expect(await p.$('#signed-in-as')).toBeNull();
      await p.context().close();
    }));

  it('lets an account without a password set one after signing in at the provider again, then sign in with it', () =>
    explained(async () => {
      const p = await freshPage();
      await toProvider(p);
      await atProvider(p, 'setter');
      await p.waitForSelector('#signed-in-as', { timeout: 20_000 });
      await p.goto(`${relayUrl}/#/account`);
      await p.getByRole('heading', { name: 'Set a password' }).waitFor();
      // No current-password field: the account has none.
      expect(await p.$('#current-password')).toBeNull();
      // The sign-in a moment ago did not say when the person authenticated (no max_age
      // asked): it is no proof, and the relay refuses with a sentence and the way out.
      await p.fill('#first-password', 'setter-password-123');
      await p.getByRole('button', { name: 'Set the password' }).click();
      await expect
        .poll(() => p.textContent('main'), { timeout: 10_000 })
        .toContain('sign in with Test ID again to confirm it is you');
      await shot(p, 'oidc-set-password-refused.png');

      // Confirming: the provider asks for the login again (prompt=login), whatever its
      // session, and the relay brings the person back to the account page.
      const started = Date.now();
      await p.getByRole('link', { name: 'Sign in again with Test ID' }).first().click();
      await p.waitForURL((u) => u.origin === issuer);
      await p.waitForSelector('input[name="login"]');
      await p.fill('input[name="login"]', 'setter');
      await p.fill('input[name="password"]', 'any password: the test provider takes any');
      await p.click('button.login-submit');
      await p.waitForURL((u) => u.origin === relayUrl, { timeout: 20_000 });
      await p.waitForSelector('#identity-confirmed', { timeout: 20_000 });
      console.log(`flow oidc re-authentication: ${Date.now() - started} ms`);
      expect(new URL(p.url()).hash).toBe('#/account');
      await shot(p, 'oidc-identity-confirmed.png');
      await p.fill('#first-password', 'setter-password-123');
      await p.getByRole('button', { name: 'Set the password' }).click();
      // The account has a password now: the page offers to change it.
      await p.getByRole('heading', { name: 'Change the password' }).waitFor({ timeout: 15_000 });
      await shot(p, 'oidc-password-set.png');

      // Signed out, the person signs in with email and password.
      await p.getByRole('button', { name: 'Sign out', exact: true }).click();
      await p.waitForSelector('#email');
      await p.fill('#email', SETTER);
      await p.fill('#password', 'setter-password-123');
      await p.getByRole('button', { name: 'Sign in', exact: true }).click();
      await p.waitForSelector('#signed-in-as', { timeout: 15_000 });
      expect(await p.textContent('#signed-in-as')).toBe(`Signed in as ${SETTER}`);
      await p.context().close();
    }));

  it('lets an account without a password delete itself and its devices after signing in at the provider again', () =>
    explained(async () => {
      const p = await freshPage();
      await toProvider(p);
      await atProvider(p, 'leaver');
      await p.waitForSelector('#signed-in-as', { timeout: 20_000 });

      // A desktop joins the account with `desktop-node login`, approved in this page.
      const home = join(dir, 'leaver-node');
      let out = '';
      const login = spawn(join(binDir, 'desktop-node'), ['--home', home, 'login', '--relay', relayUrl, '--name', 'leaver desk'], {
        env: { ...process.env, AISA_SECRETS_BACKEND: 'file', AISA_PASSPHRASE: 'test-passphrase' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      login.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      login.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => login.once('exit', (code) => r(code)));
      await expect.poll(() => out, { timeout: 15_000 }).toMatch(/\/activate\?code=\S+/);
      await p.goto(/(http\S+\/activate\?code=\S+)/.exec(out)![1]!);
      await p.getByRole('button', { name: 'Approve' }).click();
      await p.waitForSelector('#activate-done');
      expect(await exited, out).toBe(0);
      await p.goto(`${relayUrl}/#/devices`);
      await expect.poll(() => p.textContent('main'), { timeout: 10_000 }).toContain('leaver desk');

      // Delete: refused without a recent sign-in at the provider, with the way out.
      await p.goto(`${relayUrl}/#/account`);
      await p.getByRole('button', { name: 'Delete the account…' }).click();
      expect(await p.$('#delete-password')).toBeNull();
      await p.getByRole('button', { name: 'Delete my account' }).click();
      await expect
        .poll(() => p.textContent('main'), { timeout: 10_000 })
        .toContain('sign in with Test ID again to confirm it is you');
      expect(relayOutput).not.toContain('account deleted');

      await p.getByRole('link', { name: 'Sign in again with Test ID' }).first().click();
      await p.waitForURL((u) => u.origin === issuer);
      await p.waitForSelector('input[name="login"]');
      await p.fill('input[name="login"]', 'leaver');
      await p.fill('input[name="password"]', 'any password: the test provider takes any');
      await p.click('button.login-submit');
      await p.waitForSelector('#identity-confirmed', { timeout: 20_000 });
      await p.getByRole('button', { name: 'Delete the account…' }).click();
      await shot(p, 'oidc-delete-confirmed.png');
      await p.getByRole('button', { name: 'Delete my account' }).click();
      // Signed out, the account and its device gone.
      await p.waitForSelector('#email', { timeout: 15_000 });
      // The relay's log (its colours taken out) says so, with the one device.
      const plain = () => relayOutput.replace(/\x1b\[[0-9;]*m/g, '');
      await expect.poll(plain, { timeout: 5_000 }).toMatch(/account deleted.*devices=1/);

      // The next sign-in with the provider makes a new, empty account.
      await p.getByRole('link', { name: 'Sign in with Test ID' }).click();
      await p.waitForSelector('#signed-in-as', { timeout: 20_000 });
      const devices = await p.evaluate(async () => {
        const r = await fetch('/api/auth/refresh', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: '{}',
        });
        const { token } = (await r.json()) as { token: string };
        const list = await fetch('/api/devices', { headers: { Authorization: `Bearer ${token}` } });
        return (await list.json()) as unknown[];
      });
      expect(devices).toEqual([]);
      await p.context().close();
    }));

  it('lists how the account signs in and unlinks a provider identity with the password, by keyboard', () =>
    explained(async () => {
      const p = await freshPage();
      await toProvider(p);
      await atProvider(p, 'unlinker');
      await p.waitForSelector('#signed-in-as', { timeout: 20_000 });
      expect(await p.textContent('#signed-in-as')).toBe(`Signed in as ${UNLINKER}`);
      await p.goto(`${relayUrl}/#/account`);
      const methods = p.getByRole('list', { name: 'Sign-in methods' });
      await methods.waitFor();
      await expect.poll(() => methods.textContent()).toContain(`Test ID ${UNLINKER}`);
      const listed = (await methods.textContent()) ?? '';
      expect(listed).toContain('You can sign in with your email address and password.');
      expect(listed).toMatch(/Linked .+, last used .+\./);
      expect(listed).not.toContain('only way to sign in');
      // The provider's id for the person is not shown, nor the provider's address.
      expect(listed.replace(UNLINKER, '')).not.toContain('unlinker');
      expect(await p.textContent('main')).not.toContain(issuer);
      await shot(p, 'oidc-sign-in-methods.png');
      // At phone width the list fits: no sideways scrolling.
      await p.setViewportSize({ width: 390, height: 844 });
      await expect
        .poll(() => p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth))
        .toBeLessThanOrEqual(0);
      await shot(p, 'oidc-sign-in-methods-phone.png');
      await p.setViewportSize({ width: 1200, height: 900 });

      // With the keyboard: the Unlink button opens the form with the password field focused.
      const unlink = p.getByRole('button', { name: `Unlink Test ID (${UNLINKER})` });
      await unlink.focus();
      await p.keyboard.press('Enter');
      await p.waitForSelector('#unlink-form');
      expect(await p.evaluate(() => document.activeElement?.id)).toBe('unlink-password');
      await p.keyboard.type('not the password');
      await p.keyboard.press('Enter');
      await expect.poll(() => p.textContent('main'), { timeout: 10_000 }).toContain('The current password is wrong.');
      expect(await methods.textContent()).toContain(`Test ID ${UNLINKER}`);
      // Escape closes the form; Enter on Unlink opens it again.
      await p.keyboard.press('Escape');
      await p.waitForSelector('#unlink-form', { state: 'detached' });
      await unlink.focus();
      await p.keyboard.press('Enter');
      await p.waitForSelector('#unlink-password');
      await p.keyboard.type(PASSWORD);
      await p.keyboard.press('Enter');
      await p.waitForSelector('#identity-unlinked', { timeout: 10_000 });
      expect(await p.textContent('#identity-unlinked')).toBe(
        `Test ID (${UNLINKER}) is unlinked: it no longer signs you in to this account.`,
      );
      await p.waitForSelector('#no-identities');
      expect(await methods.textContent()).not.toContain('Test ID');
      await shot(p, 'oidc-identity-unlinked.png');
      expect(relayOutput.replace(/\x1b\[[0-9;]*m/g, '')).toMatch(/identity unlinked.*provider=testid/);

      // The relay agrees: the account lists no identity and still has its password.
      const listedNow = await p.evaluate(async () => {
        const r = await fetch('/api/auth/refresh', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: '{}',
        });
        const { token } = (await r.json()) as { token: string };
        const list = await fetch('/api/account/identities', { headers: { Authorization: `Bearer ${token}` } });
        return (await list.json()) as unknown;
      });
      expect(listedNow).toEqual({ has_password: true, identities: [] });
      await p.context().close();
    }));

  it('refuses in a sentence to unlink the only way into an account without a password, and unlinks a second identity after a fresh sign-in', () =>
    explained(async () => {
      const p = await freshPage();
      await toProvider(p);
      await atProvider(p, 'solo');
      await p.waitForSelector('#signed-in-as', { timeout: 20_000 });
      expect(await p.textContent('#signed-in-as')).toBe(`Signed in as ${SOLO}`);
      await p.goto(`${relayUrl}/#/account`);
      const methods = p.getByRole('list', { name: 'Sign-in methods' });
      await expect.poll(() => methods.textContent(), { timeout: 10_000 }).toContain(`Test ID ${SOLO}`);
      const listed = (await methods.textContent()) ?? '';
      expect(listed).toContain('This account has no password.');
      expect(listed).toContain('This is your only way to sign in.');
      const unlinkedBefore = (relayOutput.match(/identity unlinked/g) ?? []).length;
      await p.getByRole('button', { name: `Unlink Test ID (${SOLO})` }).click();
      // No password to give: the form asks to confirm only, its button focused.
      expect(await p.$('#unlink-password')).toBeNull();
      expect(await p.evaluate(() => document.activeElement?.textContent)).toBe('Unlink Test ID');
      await p.keyboard.press('Enter');
      await expect
        .poll(() => p.textContent('main'), { timeout: 10_000 })
        .toContain(
          'This is the only way left to sign in to this account: set a password or link another provider first, then unlink this one.',
        );
      await shot(p, 'oidc-last-identity-refused.png');
      expect(await methods.textContent()).toContain(`Test ID ${SOLO}`);
      expect((relayOutput.match(/identity unlinked/g) ?? []).length).toBe(unlinkedBefore);
      await p.context().close();

      // A second login at the provider with the same verified email links to the account
      // (signed in from another browser): two ways in, told apart by their ids' ends.
      const q = await freshPage();
      await toProvider(q);
      await atProvider(q, 'solo2');
      await q.waitForSelector('#signed-in-as', { timeout: 20_000 });
      expect(await q.textContent('#signed-in-as')).toBe(`Signed in as ${SOLO}`);
      await q.goto(`${relayUrl}/#/account`);
      const both = q.getByRole('list', { name: 'Sign-in methods' });
      await expect.poll(() => both.textContent(), { timeout: 10_000 }).toContain(`Test ID ${SOLO}, account …olo2`);
      expect(await both.textContent()).toContain(`Test ID ${SOLO}, account solo`);
      expect(await both.textContent()).not.toContain('only way to sign in');
      // Unlinking needs a recent sign-in at the provider (the one a moment ago did not
      // say when the person authenticated): refused with the way out.
      const first = `Unlink Test ID (${SOLO}, account solo)`;
      await q.getByRole('button', { name: first }).click();
      await q.getByRole('button', { name: 'Unlink Test ID', exact: true }).click();
      await expect
        .poll(() => q.locator('section[aria-labelledby="signin-methods-title"]').textContent(), { timeout: 10_000 })
        .toContain('sign in with Test ID again to confirm it is you');
      await shot(q, 'oidc-unlink-needs-reauth.png');
      expect((relayOutput.match(/identity unlinked/g) ?? []).length).toBe(unlinkedBefore);
      await q.getByRole('link', { name: 'Sign in again with Test ID' }).first().click();
      await q.waitForURL((u) => u.origin === issuer);
      await q.waitForSelector('input[name="login"]');
      await q.fill('input[name="login"]', 'solo2');
      await q.fill('input[name="password"]', 'any password: the test provider takes any');
      await q.click('button.login-submit');
      await q.waitForSelector('#identity-confirmed', { timeout: 20_000 });
      await q.getByRole('button', { name: first }).click();
      await q.getByRole('button', { name: 'Unlink Test ID', exact: true }).click();
      await q.waitForSelector('#identity-unlinked', { timeout: 10_000 });
      expect(await q.textContent('#identity-unlinked')).toBe(
        `Test ID (${SOLO}, account solo) is unlinked: it no longer signs you in to this account.`,
      );
      // One way in left, and the page says so.
      await expect.poll(() => both.textContent()).not.toContain('account solo');
      expect(await both.textContent()).toContain('This is your only way to sign in.');
      expect((relayOutput.match(/identity unlinked/g) ?? []).length).toBe(unlinkedBefore + 1);
      await shot(q, 'oidc-second-identity-unlinked.png');
      await q.context().close();
    }));
});
