/**
 * End-to-end encryption in real Chromium against a real relay and desktop node:
 * `desktop-node pair` prints a link; opening it in the signed-in page pairs the browser
 * (the page shows the same desktop key fingerprint the desktop printed); the desktop
 * lists the browser; actions from the runner are then sealed end to end (the node logs
 * each encrypted stream) and their output still streams into the page. Then the desktop
 * requires encryption (`[e2e] required`: the relay must not learn which apps there are):
 * the workspace's GET_STATUS is sealed too (the apps are still listed) and actions still run.
 *
 * The bytes the relay splices are checked for plaintext by the Rust test
 * `desktop-node/tests/e2e_system.rs` (it can tap the relay in-process); this test shows
 * that the web app's TypeScript side works against the real desktop.
 */

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINE_LABEL, launchChromium, type ChromiumPage } from './chromium';
import { EMAIL, PASSWORD, System } from './system';

const binDir = process.env.AISA_BIN_DIR ?? resolve(__dirname, '../../../target/debug');

let system: System;
let chromium: ChromiumPage;
let page: Page;

beforeAll(async () => {
  system = await System.start();
  chromium = await launchChromium('encryption-failure.png', () => system.logs());
  page = chromium.page;
});

afterAll(async () => {
  await chromium?.close();
  await system?.stop();
});

const explained = <T>(what: () => Promise<T>): Promise<T> => chromium.explained(what);
const node = (...args: string[]): string =>
  execFileSync(join(binDir, 'desktop-node'), ['--home', system.nodeHome, ...args], { encoding: 'utf8' });
const text = (selector: string) => chromium.text(selector);

describe(`end-to-end encryption in ${ENGINE_LABEL}`, () => {
  it('pairs through the link desktop-node pair prints, then runs actions sealed end to end', () =>
    explained(async () => {
      await page.goto(system.httpUrl);
      await page.getByLabel('Email').fill(EMAIL);
      await page.getByLabel('Password').fill(PASSWORD);
      await page.keyboard.press('Enter');
      await expect
        .poll(() => page.locator('button[data-device="browser desk"]').textContent(), { timeout: 15_000 })
        .toMatch(/online/);

      const printed = node('pair');
      const link = /^(http\S+#pair=\S+)$/m.exec(printed)?.[1];
      const fingerprint = /desktop key fingerprint: (\S+)/.exec(printed)?.[1];
      expect(link, printed).toBeTruthy();
      await page.goto(link!);
      await expect.poll(() => page.textContent('main'), { timeout: 15_000 }).toContain('Paired: actions on that desktop');
      expect(await page.textContent('main')).toContain(fingerprint!);
      // The secret is gone from the address bar.
      expect(page.url()).not.toContain('#pair=');
      expect(node('browsers', 'list')).toMatch(/\tactive\t/);
      await chromium.shot('paired.png');

      await page.goto(`${system.httpUrl}/#/run/hello-ai`);
      await page.waitForSelector('#root_action');
      await expect.poll(() => page.textContent('main')).toContain(`End-to-end encrypted (desktop key ${fingerprint})`);
      await page.fill('#root_payload', JSON.stringify({ topic: 'sealed QUIC' }));
      await page.fill('#root_action', 'write');
      await page.focus('#root_action');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#run-status:has-text("Done")', { timeout: 15_000 });
      expect(await text('#output')).toBe('Echo: Write a short paragraph about sealed QUIC.');
      // The desktop served it as an encrypted stream.
      expect(system.logs()).toMatch(/end-to-end encrypted stream/);
      await chromium.shot('encrypted-action.png');
    }));

  it('with [e2e] required, the workspace status and actions still work, all sealed', () =>
    explained(async () => {
      const config = join(system.nodeHome, 'node.toml');
      const toml = readFileSync(config, 'utf8');
      expect(toml).toContain('[e2e]\nrequired = false');
      writeFileSync(config, toml.replace('[e2e]\nrequired = false', '[e2e]\nrequired = true'));
      await system.stopNode();
      await system.startNode();
      const sealedStreams = () => system.logs().match(/end-to-end encrypted stream/g)?.length ?? 0;
      const before = sealedStreams();
      await page.getByRole('link', { name: 'Workspace', exact: true }).click();
      const apps = page.getByRole('list', { name: 'Apps on browser desk' });
      await apps.waitFor({ timeout: 15_000 });
      // A plain GET_STATUS would be refused now: the list comes from a sealed one.
      await expect.poll(() => apps.textContent(), { timeout: 15_000 }).toMatch(/hello-ai/);
      expect(sealedStreams()).toBeGreaterThan(before);
      expect(system.logs()).not.toMatch(/accepts only end-to-end encrypted requests/);

      await page.goto(`${system.httpUrl}/#/run/hello-ai`);
      await page.waitForSelector('#root_action');
      await page.fill('#root_payload', JSON.stringify({ topic: 'required QUIC' }));
      await page.fill('#root_action', 'write');
      await page.focus('#root_action');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#run-status:has-text("Done")', { timeout: 15_000 });
      expect(await text('#output')).toBe('Echo: Write a short paragraph about required QUIC.');
      await chromium.shot('e2e-required.png');
    }));
});
