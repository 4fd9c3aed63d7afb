/**
 * Chromium as a {@link Driver}: Debian's `/usr/bin/chromium` (or `$CHROMIUM`) through
 * playwright-core over the DevTools protocol, headless, with the same flags and viewport
 * as the Chromium-only suite (`../chromium.ts`).
 */

import { chromium } from 'playwright-core';
import type { Driver, Key } from './driver';

/** The flags Chromium runs with in a container without a display or GPU. */
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Launches Chromium with one 1200×900 page. */
export async function launchPlaywrightChromium(): Promise<Driver> {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
  });
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const lines: string[] = [];
  page.on('console', (m) => lines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => lines.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => {
    lines.push(`dialog (dismissed): ${d.message()}`);
    void d.dismiss();
  });
  return {
    engine: 'chromium',
    version: `chromium/${browser.version()}`,
    protocol: 'Chrome DevTools Protocol (playwright-core)',
    async goto(url) {
      await page.goto(url);
    },
    url: async () => page.url(),
    evaluate: <T>(expression: string) => page.evaluate(expression) as Promise<T>,
    click: (selector) => page.click(selector),
    fill: (selector, value) => page.fill(selector, value),
    press: (selector, key: Key) => page.press(selector, key),
    async select(selector, value) {
      await page.selectOption(selector, value);
    },
    setFile: (selector, path) => page.setInputFiles(selector, path),
    resize: (width, height) => page.setViewportSize({ width, height }),
    async screenshot(path) {
      await page.screenshot({ path });
    },
    consoleLines: async () => [...lines],
    close: () => browser.close(),
  };
}
