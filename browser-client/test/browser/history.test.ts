/**
 * The run history in real Chromium against a real relay, desktop node and provider: an
 * action's output and its code block are copied with their buttons; the History screen
 * lists the run (kept on the desktop), finds it by a word of its input, opens it
 * (input, output), downloads it as Markdown, runs it again with the same input (the
 * runner opens with the form filled), deletes one run, then all of them; at phone width
 * (390 px) nothing scrolls sideways.
 *
 * Screenshots land in browser-client/test-artifacts/history-*.png; each flow's time is
 * printed (`flow …: N ms`).
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS, ENGINE, ENGINE_LABEL, launchChromium, type ChromiumPage } from './chromium';
import { EMAIL, PASSWORD, System } from './system';

let system: System;
let chromium: ChromiumPage;
let context: BrowserContext;
let page: Page;

beforeAll(async () => {
  system = await System.start();
  chromium = await launchChromium('history-failure.png', () => system.logs());
  // A context of its own: clipboard permissions, and "Delete all"'s confirmation accepted.
  context = await chromium.browser.newContext({ viewport: { width: 1200, height: 900 }, acceptDownloads: true });
  // Firefox has no clipboard permissions to grant (BiDi's permissions.setPermission refuses
  // the names as an invalid argument); there the test preference chromium.ts sets lets the
  // page read the clipboard, and writing needs only the click.
  if (ENGINE === 'chromium') await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: system.httpUrl });
  else await context.addInitScript(OFFERED_FILE_HOOK);
  page = await context.newPage();
  page.on('console', (m) => chromium.consoleLines.push(`history ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => chromium.consoleLines.push(`history pageerror: ${e.message}`));
  page.on('dialog', (d) => {
    chromium.dialogs.push(d.message());
    void d.accept();
  });
});

afterAll(async () => {
  await context?.close();
  await chromium?.close();
  await system?.stop();
});

const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, name), fullPage: true });
const text = async (selector: string): Promise<string> => ((await page.textContent(selector)) ?? '').trim();
const clipboard = (): Promise<string> => page.evaluate(() => navigator.clipboard.readText());

/**
 * Records, in the page, the name and text of each blob file a link offers for download
 * when the page clicks it (`window.__offered`); see {@link offeredFile}.
 */
const OFFERED_FILE_HOOK = `(() => {
  window.__offered = [];
  const click = HTMLAnchorElement.prototype.click;
  HTMLAnchorElement.prototype.click = function () {
    if (this.download && this.href.startsWith('blob:')) {
      const name = this.download;
      fetch(this.href).then((r) => r.text()).then((text) => window.__offered.push({ name, text }));
    }
    return click.call(this);
  };
})()`;

/**
 * The file `click` makes the page offer for download: its suggested name and its text.
 * Chromium: playwright's download event and the saved file. Firefox ESR 153 over WebDriver
 * BiDi sends no `browsingContext.downloadWillBegin` for a blob link's download, and no
 * file appears in the download folder playwright set (both checked on a static page too),
 * so there the name and text the page put in the link it clicked are read
 * ({@link OFFERED_FILE_HOOK}): what Firefox then saves is not checked.
 */
async function offeredFile(click: () => Promise<void>): Promise<{ name: string; text: string }> {
  if (ENGINE === 'chromium') {
    const [download] = await Promise.all([page.waitForEvent('download'), click()]);
    return { name: download.suggestedFilename(), text: readFileSync((await download.path())!, 'utf8') };
  }
  const before = await page.evaluate<number>('window.__offered.length');
  await click();
  await expect.poll(() => page.evaluate<number>('window.__offered.length')).toBeGreaterThan(before);
  return page.evaluate<{ name: string; text: string }>('window.__offered[window.__offered.length - 1]');
}

async function timed<T>(flow: string, what: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await what();
  } finally {
    console.log(`flow ${flow}: ${Date.now() - started} ms`);
  }
}

const MARKER = 'history marker 4711';
const TOPIC = `${MARKER}\n\`\`\`\nlet answer = 42;\n\`\`\`\nand one more line`;
/** What the fake provider answers hello-ai's prompt with. */
const OUTPUT = `Echo: Write a short paragraph about ${TOPIC}.`;
const PAYLOAD = JSON.stringify({ topic: TOPIC });

async function runFromRunner(): Promise<void> {
  await page.getByRole('button', { name: 'Run on browser desk' }).click();
  await expect.poll(() => text('#run-status'), { timeout: 20_000 }).toMatch(/^Done/);
}

describe(`run history (${ENGINE_LABEL})`, () => {
  it('copies output and code, lists, searches, opens, downloads, re-runs and deletes runs', () =>
    chromium.explained(() =>
      timed('history', async () => {
        await page.goto(system.httpUrl);
        await page.getByLabel('Email').fill(EMAIL);
        await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
        await page.getByRole('button', { name: 'Sign in' }).click();
        await page.waitForSelector('#signed-in-as');

        // A run, from the runner (hello-ai is installed from a file: the free-form form).
        await page.goto(`${system.httpUrl}/#/run/hello-ai`);
        await page.waitForSelector('#root_action');
        await page.fill('#root_action', 'write');
        await page.fill('#root_payload', PAYLOAD);
        await runFromRunner();
        const output = await page.evaluate(() => document.querySelector('#output')?.textContent ?? '');
        expect(output).toContain(MARKER);

        // Copy buttons: the whole output, and the code block.
        await page.click('#copy-output');
        await expect.poll(() => text('#copy-output')).toBe('Copied');
        expect(await clipboard()).toBe(OUTPUT);
        const codeCopy = page.locator('#output .code-block button.copy-code');
        await expect.poll(() => codeCopy.count()).toBe(1);
        await codeCopy.click();
        await expect.poll(() => codeCopy.textContent()).toBe('Copied');
        expect(await clipboard()).toBe('let answer = 42;\n');
        await shot('history-runner-copy.png');

        // History: the run is there, kept on the desktop.
        await page.getByRole('link', { name: 'History', exact: true }).click();
        await page.locator('#main').getByRole('heading', { name: 'History', exact: true }).waitFor();
        await expect.poll(() => text('#history-status'), { timeout: 15_000 }).toMatch(/^1 run;/);
        const item = page.locator('.history-item').first();
        expect(await item.textContent()).toContain('write');
        expect(await item.textContent()).toContain('Done');
        expect(await item.textContent()).toContain(MARKER);

        // Search: by a word of the input; a word in no run finds none.
        await page.fill('#history-search', 'nothing-like-this');
        await expect.poll(() => text('#history-status')).toBe('No run matches “nothing-like-this”.');
        await page.fill('#history-search', '4711');
        await expect.poll(() => text('#history-status')).toMatch(/^1 run matching “4711”/);
        await shot('history-search.png');

        // Open it: its input and its output, with a copy button on the code block.
        await page.locator('.history-item').first().click();
        await page.waitForSelector('#history-run-title');
        expect(await text('#history-input')).toContain(MARKER);
        expect(await text('#history-run-meta')).toContain('Done');
        await expect.poll(() => page.locator('#history-output .code-block button.copy-code').count()).toBe(1);
        expect(await text('#history-output pre')).toBe('let answer = 42;');
        await page.click('#history-copy');
        await expect.poll(() => clipboard()).toBe(OUTPUT);
        await shot('history-run.png');

        // Download as Markdown.
        const download = await offeredFile(() => page.click('#history-download'));
        expect(download.name).toMatch(/^hello-ai-write-\d{4}-\d\d-\d\d-\d{4}\.md$/);
        const md = download.text;
        expect(md).toMatch(/^# .+: write\n/);
        expect(md).toContain('- Desktop: browser desk\n');
        expect(md).toContain('- Status: Done\n');
        expect(md).toContain(`## Input\n\n\`\`\`\`json\n${JSON.stringify({ topic: TOPIC }, null, 2)}\n\`\`\`\`\n`);
        expect(md).toContain(`## Output\n\n${OUTPUT}\n`);

        // Run again: the runner with the same input, and a second run in the history.
        await page.click('#history-run-again');
        await page.waitForURL(/#\/run\/hello-ai$/);
        await page.waitForSelector('#root_action');
        await expect.poll(() => page.inputValue('#root_action')).toBe('write');
        expect(await page.inputValue('#root_payload')).toBe(PAYLOAD);
        await shot('history-run-again.png');
        await runFromRunner();
        await page.getByRole('link', { name: 'History', exact: true }).click();
        await expect.poll(() => text('#history-status'), { timeout: 15_000 }).toMatch(/^2 runs;/);
        const ids = await page.locator('.history-item').evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-run'))));
        expect(ids[0]).toBeGreaterThan(ids[1]!);

        // Delete the newest: one is left.
        await page.locator('.history-item').first().click();
        await page.waitForSelector('#history-run-title');
        await page.click('#history-delete');
        await expect.poll(() => text('#history-status')).toMatch(/^1 run;/);
        expect(await page.locator('.history-item').first().getAttribute('data-run')).toBe(String(ids[1]));
        // At phone width the list and a run fit: no sideways scrolling.
        await page.setViewportSize({ width: 390, height: 844 });
        await page.locator('.history-item').first().click();
        await page.waitForSelector('#history-run-title');
        expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
        await shot('history-phone.png');
        await page.setViewportSize({ width: 1200, height: 900 });
        // Delete all (after the confirmation, accepted here).
        await page.getByRole('button', { name: 'Delete all' }).click();
        await expect.poll(() => text('#history-status')).toBe('No runs yet. Run an app and it shows up here.');
        expect(chromium.dialogs.at(-1)).toMatch(/^Delete every run kept on browser desk\?/);
        await shot('history-empty.png');
      }),
    ));
});
