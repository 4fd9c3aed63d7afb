/**
 * Firefox ESR as a {@link Driver}: Debian's `/usr/bin/firefox-esr` (or `$FIREFOX`)
 * driven over WebDriver BiDi by puppeteer-core (Playwright's own Firefox build cannot be
 * downloaded here, and Debian has no geckodriver). puppeteer-core starts Firefox itself,
 * headless, with a fresh profile of its own, and speaks BiDi to it directly.
 *
 * WebTransport with `serverCertificateHashes` is on by default since Firefox 125, so the
 * web app connects as it does in Chromium; no preference is changed for it.
 */

import puppeteer, { type ElementHandle } from 'puppeteer-core';
import type { Driver, Key } from './driver';

/** Launches Firefox ESR with one 1200×900 page. */
export async function launchFirefox(): Promise<Driver> {
  const browser = await puppeteer.launch({
    browser: 'firefox',
    protocol: 'webDriverBiDi',
    executablePath: process.env.FIREFOX ?? '/usr/bin/firefox-esr',
    headless: true,
    defaultViewport: { width: 1200, height: 900 },
  });
  const page = await browser.newPage();
  const lines: string[] = [];
  page.on('console', (m) => lines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => lines.push(`pageerror: ${String(e)}`));
  page.on('dialog', (d) => {
    lines.push(`dialog (dismissed): ${d.message()}`);
    void d.dismiss();
  });
  return {
    engine: 'firefox',
    version: await browser.version(),
    protocol: 'WebDriver BiDi (puppeteer-core)',
    async goto(url) {
      await page.goto(url);
    },
    url: async () => page.url(),
    evaluate: <T>(expression: string) => page.evaluate(expression) as Promise<T>,
    async click(selector) {
      await page.locator(selector).click();
    },
    async fill(selector, value) {
      if (value === '') {
        // puppeteer's fill('') leaves a React input's state as it was (no input event
        // reaches React); a person empties a field by selecting it all and deleting.
        await page.focus(selector);
        await page.evaluate((s) => (document.querySelector(s) as HTMLInputElement | null)?.select(), selector);
        await page.keyboard.press('Backspace');
        return;
      }
      await page.locator(selector).fill(value);
    },
    async press(selector, key: Key) {
      await page.focus(selector);
      await page.keyboard.press(key);
    },
    async select(selector, value) {
      await page.select(selector, value);
    },
    async setFile(selector, path) {
      const input = await page.$(selector);
      if (!input) throw new Error(`no ${selector} on the page`);
      // BiDi's input.setFiles: the page sees input and change events.
      await (input as ElementHandle<HTMLInputElement>).uploadFile(path);
    },
    resize: (width, height) => page.setViewport({ width, height }),
    async screenshot(path) {
      await page.screenshot({ path });
    },
    consoleLines: async () => [...lines],
    close: () => browser.close(),
  };
}
