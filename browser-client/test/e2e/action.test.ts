/**
 * End to end in real Chromium: the page signs in, sees the desktop online and its plan
 * usage, runs the example action over WebTransport through the relay to the desktop's
 * wasm sandbox and the (local) AI provider, and shows exactly the streamed text; the
 * device's going offline is pushed to the page live. A separate browser context creates
 * a new account with the sign-up button.
 */

import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMAIL, PASSWORD, System } from './system';

const artifacts = resolve(__dirname, '../../test-artifacts');
const consoleLines: string[] = [];

let system: System;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  mkdirSync(artifacts, { recursive: true });
  system = await System.start();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  page = await browser.newPage();
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
});

afterAll(async () => {
  await browser?.close();
  await system?.stop();
});

/** Adds the page console and process logs to a failure. */
async function explained<T>(what: () => Promise<T>): Promise<T> {
  try {
    return await what();
  } catch (err) {
    await page?.screenshot({ path: join(artifacts, 'failure.png') }).catch(() => undefined);
    throw new Error(`${String(err)}\n--- page console\n${consoleLines.join('\n')}\n${system.logs()}`);
  }
}

describe('the web app in Chromium', () => {
  it('signs in and lists the desktop as online', () =>
    explained(async () => {
      await page.goto(system.httpUrl);
      await page.getByLabel('Email').fill(EMAIL);
      await page.getByLabel('Password').fill('wrong password');
      await page.click('#signin');
      await expect.poll(() => page.textContent('#signin-error')).toMatch(/wrong email or password/);

      await page.getByLabel('Password').fill(PASSWORD);
      await page.keyboard.press('Enter');
      await page.waitForSelector('#device option:has-text("e2e desk (online)")', { state: 'attached' });
      await expect
        .poll(() => page.textContent('#plan'))
        .toMatch(/^Free plan · 1\/3 devices · 0\/500 actions today$/);
    }));

  it('runs the action and shows exactly the streamed text', () =>
    explained(async () => {
      await page.getByLabel('Topic').fill('QUIC');
      // Time from the click to the first chunk on screen, measured inside the page (the
      // WebTransport session opens at sign-in, for the live device status).
      await page.evaluate(() => {
        const output = document.getElementById('output')!;
        const marks = { clicked: 0, firstChunk: 0 };
        (window as unknown as { marks: typeof marks }).marks = marks;
        new MutationObserver((_, observer) => {
          if (output.textContent) {
            marks.firstChunk = performance.now();
            observer.disconnect();
          }
        }).observe(output, { childList: true, characterData: true, subtree: true });
        marks.clicked = performance.now();
        document.getElementById('run')!.click();
      });
      await page.waitForSelector('#status:has-text("done")');
      expect(await page.textContent('#output')).toBe('Echo: Write a short paragraph about QUIC.');
      expect(await page.textContent('#status')).toMatch(/^done: 7 chunks in \d+ ms$/);
      const marks = await page.evaluate(() => (window as unknown as { marks: { clicked: number; firstChunk: number } }).marks);
      const firstChunkMs = marks.firstChunk - marks.clicked;
      expect(firstChunkMs).toBeGreaterThan(0);
      console.log(`click to first chunk: ${firstChunkMs.toFixed(1)} ms`);
      // The plan usage counts the finished action.
      await expect.poll(() => page.textContent('#plan')).toMatch(/ · 1\/500 actions today$/);
      await page.screenshot({ path: join(artifacts, 'action-done.png') });

      // A second run reuses the session.
      await page.evaluate(() => {
        const w = window as unknown as { marks: { clicked: number; firstChunk: number } };
        const output = document.getElementById('output')!;
        new MutationObserver((_, observer) => {
          if (output.textContent) {
            w.marks.firstChunk = performance.now();
            observer.disconnect();
          }
        }).observe(output, { childList: true, characterData: true, subtree: true });
        w.marks.clicked = performance.now();
        document.getElementById('run')!.click();
      });
      await page.waitForSelector('#status:has-text("done")');
      await expect.poll(() => page.textContent('#plan')).toMatch(/ · 2\/500 actions today$/);
      const again = await page.evaluate(() => (window as unknown as { marks: { clicked: number; firstChunk: number } }).marks);
      console.log(`click to first chunk on an open session: ${(again.firstChunk - again.clicked).toFixed(1)} ms`);
    }));

  it('shows HTML from the model as text, never as markup', () =>
    explained(async () => {
      await page.getByLabel('Topic').fill('<img src=x onerror=alert(1)>');
      await page.click('#run');
      await page.waitForSelector('#status:has-text("done")');
      expect(await page.textContent('#output')).toBe('Echo: Write a short paragraph about <img src=x onerror=alert(1)>.');
      expect(await page.locator('#output img').count()).toBe(0);
    }));

  it('reports a provider failure as a readable error', () =>
    explained(async () => {
      await page.getByLabel('Topic').fill('[500]');
      await page.click('#run');
      await page.waitForSelector('#status:has-text("error")');
      expect(await page.textContent('#status')).toMatch(/error \[provider_error\]: .*HTTP 500/);
    }));

  it('cancels a running action and the provider request with it', () =>
    explained(async () => {
      const aborted = async (): Promise<number> =>
        ((await (await fetch(system.providerUrl.replace(/\/v1$/, '/stats'))).json()) as { aborted: number }).aborted;
      const before = await aborted();
      await page.getByLabel('Topic').fill('[slow] a long story');
      await page.click('#run');
      await expect.poll(() => page.textContent('#output'), { timeout: 10_000 }).toMatch(/^Echo: /);
      await page.click('#cancel');
      await page.waitForSelector('#status:has-text("cancelled")');
      await expect.poll(aborted, { timeout: 10_000 }).toBe(before + 1);
    }));

  it('creates an account with the sign-up button (in a separate browser context)', () =>
    explained(async () => {
      const context = await browser.newContext();
      try {
        const fresh = await context.newPage();
        fresh.on('console', (m) => consoleLines.push(`signup ${m.type()}: ${m.text()}`));
        fresh.on('pageerror', (e) => consoleLines.push(`signup pageerror: ${e.message}`));
        await fresh.goto(system.httpUrl);
        const email = `new-${Date.now()}@example.com`;
        await fresh.getByLabel('Email').fill(email);
        await fresh.getByLabel('Password').fill('short');
        await fresh.click('#signup');
        await expect.poll(() => fresh.textContent('#signin-error')).toMatch(/at least 8 characters/);

        await fresh.getByLabel('Password').fill('a-new-password-1');
        await fresh.click('#signup');
        await fresh.waitForSelector('#app', { state: 'visible' });
        expect(await fresh.textContent('#signed-in-as')).toBe(`Signed in as ${email}`);
        await expect.poll(() => fresh.textContent('#devices-status')).toMatch(/^No devices yet/);
        expect(await fresh.locator('#device option').count()).toBe(0);
        await expect
          .poll(() => fresh.textContent('#plan'))
          .toMatch(/^Free plan · 0\/3 devices · 0\/500 actions today$/);

        // The same email again is refused, and says so on the form.
        await fresh.click('#signout');
        await fresh.getByLabel('Email').fill(email);
        await fresh.getByLabel('Password').fill('a-new-password-1');
        await fresh.click('#signup');
        await expect.poll(() => fresh.textContent('#signin-error')).not.toBe('');
        expect(await fresh.isVisible('#app')).toBe(false);
      } finally {
        await context.close();
      }
    }));

  it('says the device is offline once the desktop stops', () =>
    explained(async () => {
      // No refresh: the relay pushes the change over the page's device-status stream.
      await system.stopNode();
      await page.waitForSelector('#device option:has-text("e2e desk (offline)")', { state: 'attached' });
      expect(await page.textContent('#devices-status')).toBe('1 device, 0 online.');
      await page.getByLabel('Topic').fill('anything');
      await page.click('#run');
      await page.waitForSelector('#status:has-text("error")');
      expect(await page.textContent('#status')).toMatch(/error \[device_offline\]/);
      await page.screenshot({ path: join(artifacts, 'device-offline.png') });
    }));
});
