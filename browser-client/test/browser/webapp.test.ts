/**
 * The web app a person lives in, in real Chromium against a real relay, desktop node
 * and provider: staying signed in across a reload, a new tab and a deep link (the
 * refresh token in an HttpOnly cookie the page cannot read); a run that keeps going
 * while the person visits other screens; the sessions list and "sign out everywhere";
 * onboarding (what this is, then "Add a desktop" with the relay's address filled in);
 * device login (`desktop-node login --relay URL` approved on the `/activate` page); the
 * devices page (rename, real last-seen time, node version, remove); changing the
 * password; deleting the account; errors in words with a Details toggle; and the phone
 * layout at 390 px (no sideways scrolling, sign-out reachable).
 *
 * Each flow's time is printed (`flow …: N ms`). Screenshots land in
 * browser-client/test-artifacts/webapp-*.png (test-artifacts/firefox/ in Firefox).
 */

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS, ENGINE_LABEL, launchChromium, type ChromiumPage } from './chromium';
import { EMAIL, PASSWORD, System, wasmBundle } from './system';

/** The app the onboarding test publishes, for the workspace to suggest as a first app. */
const FIRST_APP = {
  id: 'e2e-first',
  name: 'First Writer',
  version: '1.0.0',
  description: 'Writes a short paragraph about a topic.',
  category: 'writing',
  actionSchema: {
    write: {
      title: 'Write a paragraph',
      type: 'object',
      properties: { topic: { type: 'string', title: 'Topic', minLength: 1, maxLength: 200 } },
      required: ['topic'],
    },
  },
  permissions: { ai: true },
};

const binDir = process.env.AISA_BIN_DIR ?? resolve(__dirname, '../../../target/debug');

let system: System;
let chromium: ChromiumPage;
let page: Page;

beforeAll(async () => {
  system = await System.start();
  chromium = await launchChromium('webapp-failure.png', () => system.logs());
  ({ page } = chromium);
});

afterAll(async () => {
  await chromium?.close();
  await system?.stop();
});

const explained = <T>(what: () => Promise<T>): Promise<T> => chromium.explained(what);
const shot = (p: Page, name: string) => p.screenshot({ path: join(ARTIFACTS, name), fullPage: true });

/** Runs `what` and prints how long the flow took a person's browser. */
async function timed<T>(flow: string, what: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await what();
  } finally {
    console.log(`flow ${flow}: ${Date.now() - started} ms`);
  }
}

async function signIn(p: Page, email = EMAIL, password = PASSWORD): Promise<void> {
  await p.getByLabel('Email').fill(email);
  await p.getByLabel('Password', { exact: true }).fill(password);
  await p.getByRole('button', { name: 'Sign in' }).click();
  await p.waitForSelector('#signed-in-as');
}

async function newContext(viewport = { width: 1200, height: 900 }): Promise<{ context: BrowserContext; p: Page }> {
  const context = await chromium.browser.newContext({ viewport });
  const p = await context.newPage();
  p.on('console', (m) => chromium.consoleLines.push(`ctx ${m.type()}: ${m.text()}`));
  p.on('pageerror', (e) => chromium.consoleLines.push(`ctx pageerror: ${e.message}`));
  return { context, p };
}

describe(`the web app a person lives in (${ENGINE_LABEL})`, () => {
  it('stays signed in across a reload, a new tab and a deep link; the page cannot read the refresh token', () =>
    explained(() =>
      timed('signed in across reloads', async () => {
        const { context, p } = await newContext();
        try {
          await p.goto(system.httpUrl);
          // The first page says what this is.
          await expect.poll(() => p.textContent('#intro-title')).toBe('AI SuperApp');
          expect(await p.textContent('.intro')).toMatch(/your own computer/);
          await shot(p, 'webapp-first-page.png');
          await signIn(p);

          const cookies = await p.context().cookies();
          const refresh = cookies.find((c) => c.name === 'aisa_refresh');
          expect(refresh, JSON.stringify(cookies)).toBeDefined();
          expect(refresh).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict', path: '/api/auth' });
          expect(await p.evaluate(() => document.cookie)).not.toContain('aisa_refresh');

          // A deep link, then a reload: the same screen, still signed in.
          await p.goto(`${system.httpUrl}/#/account`);
          await p.locator('#main').getByRole('heading', { name: 'Account', exact: true }).waitFor();
          await p.reload();
          await p.waitForSelector('#signed-in-as');
          await p.locator('#main').getByRole('heading', { name: 'Account', exact: true }).waitFor();
          expect(await p.textContent('#signed-in-as')).toBe(`Signed in as ${EMAIL}`);

          // A new tab straight onto another screen.
          const tab = await context.newPage();
          await tab.goto(`${system.httpUrl}/#/devices`);
          await tab.waitForSelector('#signed-in-as');
          await tab.locator('#main').getByRole('heading', { name: 'Devices', exact: true }).waitFor();
          await expect.poll(() => tab.locator('.device-row h3').first().textContent()).toMatch(/browser desk/);
          // Reload both tabs at once: they refresh one at a time and both stay signed in.
          await Promise.all([p.reload(), tab.reload()]);
          await Promise.all([p.waitForSelector('#signed-in-as'), tab.waitForSelector('#signed-in-as')]);
          await tab.close();
        } finally {
          await context.close();
        }
      }),
    ));

  it('keeps a run going while the person visits other screens, and shows it on return', () =>
    explained(() =>
      timed('run across screens', async () => {
        const aborted = async (): Promise<number> =>
          ((await (await fetch(system.providerUrl.replace(/\/v1$/, '/stats'))).json()) as { aborted: number }).aborted;
        const abortedBefore = await aborted();
        await page.goto(system.httpUrl);
        await signIn(page);
        await page.goto(`${system.httpUrl}/#/run/hello-ai`);
        await page.waitForSelector('#root_action');
        await page.fill('#root_payload', JSON.stringify({ topic: '[slow] a long story' }));
        await page.fill('#root_action', 'write');
        await page.getByRole('button', { name: 'Run on browser desk' }).click();
        await expect.poll(() => chromium.text('#output'), { timeout: 10_000 }).toMatch(/^Echo: /);
        const partial = await chromium.text('#output');

        await page.getByRole('link', { name: 'Marketplace', exact: true }).click();
        await page.getByRole('heading', { name: 'Marketplace' }).waitFor();
        await page.getByRole('link', { name: 'Devices', exact: true }).click();
        await page.locator('#main').getByRole('heading', { name: 'Devices', exact: true }).waitFor();
        await page.goBack();
        await page.goBack();
        await page.waitForSelector('#root_action');
        // The form as it was, and the output: more of it than before, or all of it.
        expect(await page.inputValue('#root_action')).toBe('write');
        expect((await chromium.text('#output')).startsWith(partial)).toBe(true);
        await page.waitForSelector('#run-status:has-text("Done")', { timeout: 15_000 });
        expect(await chromium.text('#output')).toBe('Echo: Write a short paragraph about [slow] a long story.');
        expect(await aborted()).toBe(abortedBefore);
        await shot(page, 'webapp-run-after-return.png');
      }),
    ));

  it('says errors in words, with the code behind Details, and clears a stale one', () =>
    explained(() =>
      timed('errors for people', async () => {
        await page.goto(`${system.httpUrl}/#/activate`);
        await page.getByLabel('The code your desktop shows').fill('BCDF-GHJK');
        await page.getByRole('button', { name: 'Continue' }).click();
        const note = page.locator('.error-note');
        await expect.poll(() => note.locator('.error').textContent()).toMatch(/^No desktop is waiting with this code/);
        expect(await note.locator('details').getAttribute('open')).toBeNull();
        await note.locator('summary').click();
        expect(await note.locator('details').textContent()).toMatch(/http_404/);
        await shot(page, 'webapp-error-details.png');
        // Empty code: a new message replaces the old one, never beside it.
        await page.getByLabel('The code your desktop shows').fill('');
        await page.getByRole('button', { name: 'Continue' }).click();
        await expect.poll(() => page.locator('.error-note').count()).toBe(1);
        expect(await chromium.text('.error-note .error')).toBe('Type the code your desktop shows.');
      }),
    ));

  it('onboards a new person: sign-up, "Add a desktop", device login approved in the browser, the desktop online, devices page, password, account deletion', () =>
    explained(() =>
      timed('onboarding to a first result', async () => {
        const { context, p } = await newContext();
        const home = mkdtempSync(join(tmpdir(), 'aisa-device-login-'));
        let login: ReturnType<typeof spawn> | null = null;
        let node: ReturnType<typeof spawn> | null = null;
        try {
          await p.goto(system.httpUrl);
          const email = `onboard-${Date.now()}@example.com`;
          await p.getByLabel('Email').fill(email);
          await p.getByLabel('Password', { exact: true }).fill('onboarding-password-1');
          await p.getByRole('button', { name: 'Create account' }).click();
          await p.getByRole('heading', { name: 'Add a desktop' }).waitFor();
          const command = (await p.getByLabel('Login command').textContent())!.trim();
          expect(command).toBe(`desktop-node login --relay ${system.httpUrl}`);
          expect(await p.textContent('#add-desktop-status')).toMatch(/Waiting for your desktop/);
          await shot(p, 'webapp-add-desktop.png');

          // The command the page shows, as the person would run it: no password.
          let out = '';
          login = spawn(join(binDir, 'desktop-node'), ['--home', home, ...command.split(' ').slice(1), '--name', 'onboarding desk'], {
            env: { ...process.env, AISA_SECRETS_BACKEND: 'file', AISA_PASSPHRASE: 'test-passphrase' },
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          login.stdout!.on('data', (d: Buffer) => (out += d.toString()));
          login.stderr!.on('data', (d: Buffer) => (out += d.toString()));
          const exited = new Promise<number | null>((r) => login!.once('exit', (code) => r(code)));
          await expect.poll(() => out, { timeout: 15_000 }).toMatch(/\/activate\?code=\S+/);
          const link = /(http\S+\/activate\?code=\S+)/.exec(out)![1]!;
          const code = /^\s+([A-Z]{4}-[A-Z]{4})\s*$/m.exec(out)![1]!;

          await p.goto(link);
          await p.getByRole('button', { name: 'Approve' }).waitFor();
          expect(await p.textContent('#confirm-code')).toBe(code);
          expect(await p.textContent('#confirm-title')).toMatch(/onboarding desk/);
          await shot(p, 'webapp-approve-desktop.png');
          await p.getByRole('button', { name: 'Approve' }).click();
          await p.waitForSelector('#activate-done');
          expect(await exited, out).toBe(0);
          expect(out).toMatch(/registered as "onboarding desk"/);

          // The desktop comes online; the page says so and suggests a first app.
          node = spawn(join(binDir, 'desktop-node'), ['--home', home, 'run', '--ai-base-url', system.providerUrl], {
            env: { ...process.env, AISA_SECRETS_BACKEND: 'file', AISA_PASSPHRASE: 'test-passphrase', OPENAI_API_KEY: 'sk-browser-test' },
            stdio: 'ignore',
          });
          await p.goto(`${system.httpUrl}/#/add-desktop`);
          await expect.poll(() => p.textContent('#add-desktop-status'), { timeout: 20_000 }).toMatch(/onboarding desk is online/);
          await p.getByRole('link', { name: 'Run your first app' }).click();
          await p.getByRole('heading', { name: 'Workspace' }).waitFor();

          // The workspace suggests a first app; it installs once approved on the desktop, and runs.
          await system.publish(wasmBundle(FIRST_APP));
          await p.reload();
          await p.getByRole('link', { name: `Start with ${FIRST_APP.name}` }).click();
          await p.getByRole('heading', { name: FIRST_APP.name }).waitFor();
          await shot(p, 'webapp-first-app.png');
          await p.getByRole('button', { name: 'Install on onboarding desk' }).click();
          await expect.poll(() => p.textContent('#install-status'), { timeout: 15_000 }).toMatch(/Waiting for approval/);
          const approve = spawnSync(join(binDir, 'desktop-node'), ['--home', home, 'apps', 'approve', FIRST_APP.id], {
            env: { ...process.env, AISA_SECRETS_BACKEND: 'file', AISA_PASSPHRASE: 'test-passphrase' },
            encoding: 'utf8',
          });
          expect(approve.status, `${approve.stdout}${approve.stderr}`).toBe(0);
          await expect.poll(() => p.textContent('#install-status'), { timeout: 30_000 }).toMatch(/^Installed version 1\.0\.0/);
          await p.getByRole('link', { name: `Open ${FIRST_APP.name}` }).click();
          await p.getByLabel(/^Topic/).fill('a first result');
          await p.getByRole('button', { name: 'Run on onboarding desk' }).click();
          await expect.poll(() => p.textContent('#run-status'), { timeout: 20_000 }).toMatch(/^Done/);
          expect(await p.textContent('#output')).toContain('a first result');
          await shot(p, 'webapp-first-result.png');

          // The devices page: a real last-seen time, the node version, rename.
          await p.getByRole('link', { name: 'Devices', exact: true }).click();
          const row = p.locator('.device-row').first();
          await expect.poll(() => row.locator('.node-version').textContent(), { timeout: 10_000 }).toMatch(/^version \d+\.\d+/);
          await row.getByRole('button', { name: 'Rename' }).click();
          await row.getByLabel('New name').fill('studio');
          await row.getByRole('button', { name: 'Save' }).click();
          await expect.poll(() => row.locator('h3').textContent()).toMatch(/^studio/);
          node.kill('SIGINT');
          await expect.poll(() => row.locator('.last-seen').textContent(), { timeout: 15_000 }).toMatch(/just now|minute/);
          expect(await row.locator('.last-seen').textContent()).not.toMatch(/1970/);
          await shot(p, 'webapp-devices.png');
          await row.getByRole('button', { name: 'Remove' }).click();
          await row.getByRole('button', { name: 'Remove studio' }).click();
          await expect.poll(() => p.locator('.device-row').count()).toBe(0);

          // Change the password, then delete the account.
          await p.getByRole('link', { name: 'Account', exact: true }).click();
          await p.getByLabel('Current password').fill('onboarding-password-1');
          await p.getByLabel('New password').fill('onboarding-password-2');
          await p.getByRole('button', { name: 'Change the password' }).click();
          await p.waitForSelector('#password-changed');
          await p.reload();
          await p.waitForSelector('#signed-in-as'); // the new cookie works
          await p.getByRole('button', { name: 'Delete the account…' }).click();
          await p.getByLabel('Your password').fill('onboarding-password-2');
          await p.getByRole('button', { name: 'Delete my account' }).click();
          await p.waitForSelector('#email');
          const gone = await fetch(`${system.httpUrl}/api/auth/login`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ email, password: 'onboarding-password-2' }),
          });
          expect(gone.status).toBe(401);
        } finally {
          login?.kill('SIGKILL');
          node?.kill('SIGKILL');
          await context.close();
          rmSync(home, { recursive: true, force: true });
        }
      }),
    ));

  it('lists sessions and signs out everywhere', () =>
    explained(() =>
      timed('sessions and sign out everywhere', async () => {
        const { context, p } = await newContext();
        try {
          await p.goto(system.httpUrl);
          await signIn(p);
          await page.goto(`${system.httpUrl}/#/account`);
          await page.reload();
          const sessions = page.getByRole('list', { name: 'Sessions' });
          await expect.poll(() => sessions.locator('li').count()).toBeGreaterThanOrEqual(2);
          expect(await sessions.locator('.badge:has-text("this browser")').count()).toBe(1);
          await shot(page, 'webapp-account.png');
          await page.getByRole('button', { name: 'Sign out everywhere' }).click();
          await page.waitForSelector('#email');
          // The other browser is out too: at once for its access token, and on reload.
          await p.reload();
          await p.waitForSelector('#email');
          await page.reload();
          await page.waitForSelector('#email');
        } finally {
          await context.close();
        }
      }),
    ));

  it('fits a 390 px phone: no sideways scrolling, sign-out on screen', () =>
    explained(() =>
      timed('phone layout', async () => {
        const { context, p } = await newContext({ width: 390, height: 844 });
        try {
          const overflow = () => p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
          await p.goto(system.httpUrl);
          expect(await overflow()).toBeLessThanOrEqual(0);
          await shot(p, 'webapp-phone-signin.png');
          await signIn(p);
          for (const [route, name] of [
            ['#/', 'workspace'],
            ['#/run/hello-ai', 'run'],
            ['#/marketplace', 'marketplace'],
            ['#/devices', 'devices'],
            ['#/account', 'account'],
            ['#/add-desktop', 'add-desktop'],
          ] as const) {
            await p.goto(`${system.httpUrl}/${route}`);
            await p.waitForSelector('#signed-in-as');
            await p.waitForTimeout(300);
            expect(await overflow(), `${name} is wider than the phone`).toBeLessThanOrEqual(0);
            const box = await p.getByRole('button', { name: 'Sign out', exact: true }).boundingBox();
            expect(box, name).not.toBeNull();
            expect(box!.x).toBeGreaterThanOrEqual(0);
            expect(box!.x + box!.width, `${name}: sign-out off screen`).toBeLessThanOrEqual(390);
            await shot(p, `webapp-phone-${name}.png`);
          }
          await p.getByRole('button', { name: 'Sign out', exact: true }).click();
          await p.waitForSelector('#email');
        } finally {
          await context.close();
        }
      }),
    ));
});
