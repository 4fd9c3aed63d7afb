/**
 * The web app in real Chromium with WebTransport removed from the page (deleted before
 * any of the app's code runs, so the browser looks like one without it), against a real
 * relay, desktop node and provider: it signs in, reaches the relay over the WebSocket
 * fallback (`/tunnel/browser`, the mux), says so in the header's transport indicator,
 * lists the desktop's apps and streams an action. The transport used is printed and
 * asserted; the time to the first chunk is printed.
 */

import { type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, type ChromiumPage } from './chromium';
import { EMAIL, PASSWORD, System } from './system';

let system: System;
let chromium: ChromiumPage;
let page: Page;

beforeAll(async () => {
  system = await System.start();
  chromium = await launchChromium('websocket-failure.png', () => system.logs());
  page = chromium.page;
  await page.addInitScript(() => {
    delete (window as unknown as { WebTransport?: unknown }).WebTransport;
  });
});

afterAll(async () => {
  await chromium?.close();
  await system?.stop();
});

const text = (selector: string) => chromium.text(selector);

describe('the web app without WebTransport', () => {
  it('signs in and connects over the WebSocket, and says so', () =>
    chromium.explained(async () => {
      await page.goto(system.httpUrl);
      expect(await page.evaluate(() => typeof (window as unknown as { WebTransport?: unknown }).WebTransport)).toBe('undefined');
      await page.getByLabel('Email').fill(EMAIL);
      await page.getByLabel('Password').fill(PASSWORD);
      await page.keyboard.press('Enter');
      await expect
        .poll(() => page.locator('button[data-device="browser desk"]').textContent(), { timeout: 15_000 })
        .toMatch(/browser desk\s*online/);
      await expect.poll(() => text('#connection')).toBe('connected');
      const transport = await page.getAttribute('#transport', 'data-transport');
      console.log(`transport used: ${transport}`);
      expect(transport).toBe('websocket');
      expect(await text('#transport')).toMatch(/TCP/);
      await chromium.shot('websocket-connected.png');
    }));

  it('streams an action over the WebSocket', () =>
    chromium.explained(async () => {
      await page.getByRole('link', { name: 'Workspace', exact: true }).click();
      const apps = page.getByRole('list', { name: 'Apps on browser desk' });
      await apps.waitFor();
      await expect.poll(() => apps.textContent()).toMatch(/hello-ai\s*0\.1\.0/);
      await page.getByRole('link', { name: 'Open hello-ai on browser desk' }).click();
      await page.waitForSelector('#root_action');
      await page.fill('#root_payload', JSON.stringify({ topic: 'QUIC' }));
      await page.fill('#root_action', 'write');
      await page.evaluate(() => {
        const output = document.getElementById('output')!;
        const marks = { submitted: performance.now(), firstChunk: 0 };
        (window as unknown as { marks: typeof marks }).marks = marks;
        new MutationObserver((_, observer) => {
          if (output.textContent) {
            marks.firstChunk = performance.now();
            observer.disconnect();
          }
        }).observe(output, { childList: true, characterData: true, subtree: true });
      });
      await page.focus('#root_action');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#run-status:has-text("Done")');
      expect(await text('#output')).toBe('Echo: Write a short paragraph about QUIC.');
      expect(await page.getAttribute('#run-status', 'data-chunks')).toBe('7');
      const marks = await page.evaluate(() => (window as unknown as { marks: { submitted: number; firstChunk: number } }).marks);
      console.log(`websocket: submit to first chunk: ${(marks.firstChunk - marks.submitted).toFixed(1)} ms`);
      expect(await page.getAttribute('#transport', 'data-transport')).toBe('websocket');
      await chromium.shot('websocket-action-done.png');
    }));
});
