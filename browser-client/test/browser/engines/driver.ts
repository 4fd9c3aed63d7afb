/**
 * The small surface every browser flow is written against, so one flow definition runs
 * in every engine: Chromium through playwright-core (`playwright.ts`), Firefox ESR over
 * WebDriver BiDi with puppeteer-core (`bidi.ts`), and WebKitGTK's MiniBrowser over
 * classic WebDriver with WebKitWebDriver under Xvfb (`webdriver.ts`).
 *
 * The surface is deliberately narrow: CSS selectors, real input (typing, clicks and keys
 * the page receives as a person's), scripts evaluated from strings (plain JavaScript, so
 * no test transform leaks into the page), screenshots and console lines. Finding an
 * element by its text is done once here ({@link markByText}) on top of `evaluate`, not
 * three times in the engines. What this does not do: several pages or contexts, network
 * interception, and waiting on selectors inside the engine (flows poll from Node, the
 * same way in every engine, see {@link poll}).
 */

import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';

/** The engines the browser flows run in. */
export type EngineName = 'chromium' | 'firefox' | 'webkit';

/** Every engine, in the order the suite runs them. */
export const ENGINES: readonly EngineName[] = ['chromium', 'firefox', 'webkit'];

/** The keys flows press (named as WebDriver and Playwright both understand them). */
export type Key = 'Enter' | 'Escape' | 'Tab';

/** One launched browser with one page, driven through its engine's protocol. */
export interface Driver {
  /** Which engine this is. */
  readonly engine: EngineName;
  /** The browser's own name and version, e.g. `firefox/153.8.0`, for the record. */
  readonly version: string;
  /** The protocol it is driven over, for the record (e.g. `WebDriver BiDi (puppeteer-core)`). */
  readonly protocol: string;
  /** Loads `url` and waits for the document to load. */
  goto(url: string): Promise<void>;
  /** The page's current address. */
  url(): Promise<string>;
  /**
   * Evaluates a JavaScript expression in the page and returns its (JSON-serialisable)
   * value; a promise is awaited. Write it as plain JavaScript: it is sent as text.
   */
  evaluate<T>(expression: string): Promise<T>;
  /** Clicks the first element matching `selector` (scrolled into view). */
  click(selector: string): Promise<void>;
  /** Replaces the value of the input matching `selector` by typing `value` into it. */
  fill(selector: string, value: string): Promise<void>;
  /** Focuses the element matching `selector` and presses `key` on it. */
  press(selector: string, key: Key): Promise<void>;
  /**
   * Chooses the option whose value is `value` in the `<select>` matching `selector`, as a
   * person picking it would (the page sees a change event).
   */
  select(selector: string, value: string): Promise<void>;
  /**
   * Gives the file input matching `selector` the file at `path` (on this machine), as a
   * person choosing it in the file dialog would; the input may be visually hidden.
   */
  setFile(selector: string, path: string): Promise<void>;
  /**
   * Makes the page's viewport (the window, where the engine has no separate viewport)
   * `width` × `height` CSS pixels, e.g. a phone's 390 × 844.
   */
  resize(width: number, height: number): Promise<void>;
  /** Saves a screenshot of the viewport as PNG at `path`. */
  screenshot(path: string): Promise<void>;
  /**
   * The page's console lines and errors so far. Engines whose protocol has no console
   * events (classic WebDriver) return what a hook installed after each navigation saw.
   */
  consoleLines(): Promise<string[]>;
  /** Closes the browser and whatever was started for it (driver, display). */
  close(): Promise<void>;
}

/** Where the engines' screenshots and records land: browser-client/test-artifacts/engines/ (git-ignored). */
export const ENGINE_ARTIFACTS = resolve(__dirname, '../../../test-artifacts/engines');

/** The artifacts folder of one engine, created. */
export function artifactsOf(engine: EngineName): string {
  const dir = resolve(ENGINE_ARTIFACTS, engine);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A JavaScript expression calling `fn` (plain JavaScript source) with JSON arguments. */
export function call(fn: string, ...args: unknown[]): string {
  return `(${fn})(${args.map((a) => JSON.stringify(a)).join(', ')})`;
}

/**
 * Finds the first element matching `selector` whose trimmed text (or `aria-label`)
 * matches `text` (a string is an exact match), tags it with a fresh `data-harness`
 * attribute and returns a CSS selector for it, or throws when there is none.
 */
export async function markByText(driver: Driver, selector: string, text: string | RegExp): Promise<string> {
  const pattern = typeof text === 'string' ? { exact: text } : { source: text.source, flags: text.flags };
  const mark = await driver.evaluate<string | null>(
    call(
      `function (selector, pattern) {
        const matches = (s) => pattern.exact !== undefined ? s === pattern.exact : new RegExp(pattern.source, pattern.flags).test(s);
        for (const el of document.querySelectorAll(selector)) {
          const label = (el.getAttribute('aria-label') || '').trim();
          if (matches((el.textContent || '').trim()) || (label && matches(label))) {
            const id = String(Math.random()).slice(2);
            el.setAttribute('data-harness', id);
            return '[data-harness="' + id + '"]';
          }
        }
        return null;
      }`,
      selector,
      pattern,
    ),
  );
  if (!mark) throw new Error(`no ${selector} with text ${String(text)} on the page`);
  return mark;
}

/** The trimmed text content of the first element matching `selector` ('' when there is none). */
export function textOf(driver: Driver, selector: string): Promise<string> {
  return driver.evaluate<string>(
    call(`function (s) { const el = document.querySelector(s); return el ? (el.textContent || '').trim() : ''; }`, selector),
  );
}

/** Whether an element matches `selector`. */
export function exists(driver: Driver, selector: string): Promise<boolean> {
  return driver.evaluate<boolean>(call(`function (s) { return document.querySelector(s) !== null; }`, selector));
}

/**
 * Calls `read` until `accept` holds for its value (or `timeoutMs` passes, then throws
 * with the last value), every 100 ms; returns the accepted value. A `read` that throws
 * (page navigating, element not there yet) counts as not yet.
 */
export async function poll<T>(
  what: string,
  read: () => Promise<T>,
  accept: (value: T) => boolean,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = '(never read)';
  for (;;) {
    try {
      const value = await read();
      last = value;
      if (accept(value)) return value;
    } catch (err) {
      last = `threw: ${String(err)}`;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms; last value: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Polls the text of `selector` until it matches `want` (a string is an exact match); returns it. */
export function waitText(driver: Driver, selector: string, want: string | RegExp, timeoutMs = 15_000): Promise<string> {
  const ok = (t: string): boolean => (typeof want === 'string' ? t === want : want.test(t));
  return poll(`text of ${selector} to match ${String(want)}`, () => textOf(driver, selector), ok, timeoutMs);
}

/** Waits until an element matches `selector`. */
export async function waitFor(driver: Driver, selector: string, timeoutMs = 15_000): Promise<void> {
  await poll(`${selector} on the page`, () => exists(driver, selector), (x) => x, timeoutMs);
}

/**
 * A console hook for engines without console events: keeps the page's console calls and
 * uncaught errors in `window.__harnessConsole` (installed again after each navigation).
 */
export const CONSOLE_HOOK = `(function () {
  if (window.__harnessConsole) return;
  const lines = (window.__harnessConsole = []);
  for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
    const original = console[level].bind(console);
    console[level] = (...args) => { lines.push(level + ': ' + args.map(String).join(' ')); original(...args); };
  }
  window.addEventListener('error', (e) => lines.push('pageerror: ' + e.message));
  window.addEventListener('unhandledrejection', (e) => lines.push('unhandledrejection: ' + String(e.reason)));
})()`;
