/**
 * The Chromium every browser test drives: Debian's `/usr/bin/chromium` (or `$CHROMIUM`)
 * through playwright-core, headless, one page that records its console, page errors and
 * dialogs, and a wrapper that adds those and the system's logs to a failure.
 */

import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

/** Where screenshots land: browser-client/test-artifacts/. */
export const ARTIFACTS = resolve(__dirname, '../../test-artifacts');

/** The flags Chromium runs with in a container without a display or GPU. */
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A launched Chromium with one page, see {@link launchChromium}. */
export interface ChromiumPage {
  /** The browser (for more contexts). */
  browser: Browser;
  /** The page the test drives. */
  page: Page;
  /** Console lines and page errors, in order (other pages may add to it). */
  consoleLines: string[];
  /** The messages of every dialog the page opened (each dismissed). */
  dialogs: string[];
  /**
   * Runs a test step; on failure saves `failureShot` and rethrows with the page console
   * and `logs()` (the processes' output) appended.
   */
  explained<T>(what: () => Promise<T>): Promise<T>;
  /** A full-page screenshot named `name` in {@link ARTIFACTS}. */
  shot(name: string): Promise<Buffer>;
  /** The trimmed text content of the first element matching `selector`. */
  text(selector: string): Promise<string>;
  /** Closes the browser. */
  close(): Promise<void>;
}

/** How to start Chromium when the defaults do not do. */
export interface ChromiumOptions {
  /** What to run instead of Chromium itself (e.g. a script that starts it in a network namespace). */
  executablePath?: string;
  /** Flags besides the usual ones. */
  args?: string[];
}

/**
 * Launches Chromium with one 1200×900 page. `failureShot` names the screenshot taken when
 * an {@link ChromiumPage.explained} step fails; `logs` gives the system's logs for it.
 */
export async function launchChromium(
  failureShot: string,
  logs: () => string,
  options: ChromiumOptions = {},
): Promise<ChromiumPage> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: options.executablePath ?? process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [...CHROMIUM_ARGS, ...(options.args ?? [])],
  });
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const consoleLines: string[] = [];
  const dialogs: string[] = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  return {
    browser,
    page,
    consoleLines,
    dialogs,
    async explained<T>(what: () => Promise<T>): Promise<T> {
      try {
        return await what();
      } catch (err) {
        await page.screenshot({ path: join(ARTIFACTS, failureShot) }).catch(() => undefined);
        throw new Error(`${String(err)}\n--- page console\n${consoleLines.join('\n')}\n${logs()}`);
      }
    },
    shot: (name) => page.screenshot({ path: join(ARTIFACTS, name), fullPage: true }),
    text: async (selector) => ((await page.textContent(selector)) ?? '').trim(),
    close: () => browser.close(),
  };
}
