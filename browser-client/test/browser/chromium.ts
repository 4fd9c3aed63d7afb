/**
 * The browser every browser test drives, chosen by `AISA_BROWSER_ENGINE` (see
 * {@link ENGINE}): Debian's `/usr/bin/chromium` (or `$CHROMIUM`) by default, or Debian's
 * Firefox ESR (`firefox`), both through playwright-core, headless, one page that records
 * its console, page errors and dialogs, and a wrapper that adds those and the system's
 * logs to a failure.
 *
 * Firefox: playwright-core's `firefox` with a `moz-*` channel drives a stock Firefox over
 * WebDriver BiDi (Playwright's own patched Firefox cannot be downloaded here), through a
 * small BiDi proxy that answers the few context-setup commands Firefox ESR 153 lacks
 * (`engines/firefox-bidi-shim.mjs`). The web app connects over WebTransport with
 * certificate hashes, as in Chromium (Firefox has it since 125).
 *
 * WebKit is not offered to these suites: Playwright drives only its own patched WebKit
 * build (which cannot be downloaded here), and Debian's WebKitWebDriver 2.50 speaks only
 * classic WebDriver, which cannot carry this Playwright page API (browser contexts, init
 * scripts, role and label locators, downloads). WebKit runs the engine flows instead
 * (`engines.test.ts`, the narrower {@link import('./engines/driver').Driver} surface).
 *
 * Every suite that launches its browser here gets the switch for free; a test an engine
 * cannot run calls {@link skipInEngine} with the exact reason.
 */

import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium, firefox, type Browser, type Page } from 'playwright-core';

/** The engines these suites run in (`AISA_BROWSER_ENGINE`). */
export type SuiteEngine = 'chromium' | 'firefox';

/** Why an engine is not offered to these suites, for the error that says so. */
const NOT_OFFERED: Record<string, string> = {
  webkit:
    'WebKit cannot run the Playwright-based suites here: Playwright drives only its own patched WebKit build ' +
    '(not downloadable here) and Debian\'s WebKitWebDriver 2.50 speaks only classic WebDriver; ' +
    'WebKit runs the engine flows instead (AISA_BROWSER_ENGINES=webkit npm run test:engines)',
};

/**
 * The engine `value` (`AISA_BROWSER_ENGINE`) names: `chromium` (the default, also for an
 * empty value) or `firefox`; anything else is an error, not a silent Chromium run.
 */
export function suiteEngine(value: string | undefined): SuiteEngine {
  const name = (value ?? '').trim() || 'chromium';
  if (name === 'chromium' || name === 'firefox') return name;
  throw new Error(`AISA_BROWSER_ENGINE: ${NOT_OFFERED[name] ?? `unknown engine ${JSON.stringify(name)} (known: chromium, firefox)`}`);
}

/** The engine this run's suites drive. */
export const ENGINE: SuiteEngine = suiteEngine(process.env.AISA_BROWSER_ENGINE);

/** The engine's name for test titles: `Chromium`, `Firefox`. */
export const ENGINE_LABEL = ENGINE === 'firefox' ? 'Firefox' : 'Chromium';

/**
 * Skips the running test when this run's engine is a key of `reasons`, with that reason
 * (printed, and the skip note vitest reports). Only for what the engine itself cannot do
 * here, said exactly; never for a failure that a fix in the product would cure.
 */
export function skipInEngine(
  t: { skip: (note?: string) => void },
  reasons: Partial<Record<SuiteEngine, string>>,
): void {
  const reason = reasons[ENGINE];
  if (reason === undefined) return;
  console.log(`[engine] ${ENGINE}: skipped: ${reason}`);
  t.skip(`${ENGINE} cannot run this here: ${reason}`);
}

/** The program playwright starts as Firefox: Firefox ESR behind the BiDi proxy. */
const FIREFOX_SHIM = resolve(__dirname, 'engines/firefox-bidi-shim.mjs');

/**
 * An init script for Firefox that makes playwright's `fill` reach React.
 *
 * Over WebDriver BiDi, playwright-core 1.65 types a `fill` with a helper it puts in the
 * page (`window.__pw_bidiInsertText`) that assigns `input.value` on the element itself
 * and then dispatches `input`. React's controlled inputs track the value through that same
 * own property, so React sees no change and never calls `onChange`: the field shows the
 * text but the form submits what React had (the sign-in sent the old password). This is
 * a playwright-over-BiDi fault, not the app's (a person's typing, and playwright's
 * `keyboard.type`, which sends real key events, reach React in Firefox). The replacement
 * below does what the helper does, but sets the value through the prototype's setter, as
 * a browser's own editing does, so React's tracker sees the change. It is installed as a
 * property whose setter ignores playwright's own assignment.
 */
const FIREFOX_FILL_FIX = `(() => {
  const setValue = (el, value) => {
    const proto = el instanceof HTMLTextAreaElement ? HTMLTextAreaElement.prototype : HTMLInputElement.prototype;
    Object.getOwnPropertyDescriptor(proto, 'value').set.call(el, value);
  };
  const insertText = (text) => {
    let el = document.activeElement;
    while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
    if (!el) return undefined;
    const kind = el.nodeName.toLowerCase();
    if (kind === 'iframe' || kind === 'frame') return el;
    if (kind === 'input' || kind === 'textarea') {
      let start = null;
      try { start = el.selectionStart; } catch (_) { start = null; }
      if (start === null) {
        setValue(el, el.value + text);
      } else {
        const end = el.selectionEnd;
        setValue(el, el.value.substring(0, start) + text + el.value.substring(end));
        try { el.setSelectionRange(start + text.length, start + text.length); } catch (_) { /* not a text input */ }
      }
      el.dispatchEvent(new InputEvent('input', { data: text, bubbles: true, composed: true }));
    } else if (el instanceof HTMLElement && el.isContentEditable) {
      document.execCommand('insertText', false, text);
    }
    return undefined;
  };
  Object.defineProperty(window, '__pw_bidiInsertText', { configurable: true, get: () => insertText, set: () => {} });
})()`;

/** Where screenshots land: browser-client/test-artifacts/ (Chromium) or test-artifacts/<engine>/. */
export const ARTIFACTS = resolve(__dirname, '../../test-artifacts', ENGINE === 'chromium' ? '' : ENGINE);

/** The flags Chromium runs with in a container without a display or GPU. */
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A launched browser (Chromium or, with `AISA_BROWSER_ENGINE`, another engine) with one page, see {@link launchChromium}. */
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

/** How to start the browser when the defaults do not do. */
export interface ChromiumOptions {
  /** What to run instead of the browser itself (e.g. a script that starts Chromium in a network namespace). */
  executablePath?: string;
  /** Flags besides the usual ones (the engine's own syntax). */
  args?: string[];
}

/**
 * Launches this run's engine ({@link ENGINE}, Chromium by default; the name stays for the
 * suites that call it) with one 1200×900 page. `failureShot` names the screenshot taken when
 * an {@link ChromiumPage.explained} step fails; `logs` gives the system's logs for it.
 */
export async function launchChromium(
  failureShot: string,
  logs: () => string,
  options: ChromiumOptions = {},
): Promise<ChromiumPage> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser =
    ENGINE === 'firefox'
      ? await firefox.launch({
          channel: 'moz-firefox',
          executablePath: options.executablePath ?? FIREFOX_SHIM,
          headless: true,
          args: options.args ?? [],
          // A test preference: the page may read the clipboard without Firefox's paste
          // prompt (what Chromium's clipboard-read permission grants; history.test.ts).
          firefoxUserPrefs: { 'dom.events.testing.asyncClipboard': true },
          env: { ...process.env, AISA_FIREFOX_BINARY: process.env.FIREFOX ?? '/usr/bin/firefox-esr' },
        })
      : await chromium.launch({
          executablePath: options.executablePath ?? process.env.CHROMIUM ?? '/usr/bin/chromium',
          headless: true,
          args: [...CHROMIUM_ARGS, ...(options.args ?? [])],
        });
  if (ENGINE === 'firefox') {
    // Every context (the suites open more, for a second person or a fresh sign-in) gets
    // the fill fix before its first page loads (see FIREFOX_FILL_FIX).
    const newContext = browser.newContext.bind(browser);
    browser.newContext = async (contextOptions) => {
      const context = await newContext(contextOptions);
      await context.addInitScript(FIREFOX_FILL_FIX);
      return context;
    };
  }
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
