/**
 * File fields in real Chromium against a real relay and desktop node (docs/protocol.md,
 * "Files"): an app granted `$DOCUMENTS` (the notes example, a wasm app whose `import`
 * action reads a CSV file) is published and installed; its form's file field browses
 * the granted folders on the desktop (FILES_LIST) and a file chosen there is read by the
 * action; a file uploaded from the browser (FILE_UPLOAD, with a progress bar) lands in
 * the app's data folder on the desktop and is read by the action too; a typed `~/…` path
 * works; a typed path outside the grant is refused in words; at phone width the picker
 * fits.
 *
 * The node runs with its own HOME (so `$DOCUMENTS` is a folder of this test). Screenshots
 * land in browser-client/test-artifacts/files-*.png; the flow's time is printed.
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { strToU8, zipSync } from 'fflate';
import { type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, type ChromiumPage } from './chromium';
import { EMAIL, PASSWORD, System } from './system';

const root = resolve(__dirname, '../../..');
const binDir = process.env.AISA_BIN_DIR ?? join(root, 'target/debug');
const notesWasm = process.env.AISA_NOTES_WASM ?? join(root, 'target/guest/wasm32-unknown-unknown/release/notes.wasm');
const APP = 'e2e-files';

let person: string;
let system: System;
let chromium: ChromiumPage;
let page: Page;

beforeAll(async () => {
  // The person's folders on the desktop: Documents with a CSV in a subfolder, and a file
  // in the home folder that the app was not granted.
  person = mkdtempSync(join(tmpdir(), 'aisa-files-home-'));
  mkdirSync(join(person, 'Documents/lists'), { recursive: true });
  mkdirSync(join(person, '.config'), { recursive: true });
  writeFileSync(join(person, 'Documents/lists/week.csv'), 'note\nbuy milk 4711\ncall Ada\n');
  writeFileSync(join(person, 'secret.csv'), 'note\nnot for apps\n');
  system = await System.start({ nodeEnv: { HOME: person, XDG_CONFIG_HOME: join(person, '.config') } });
  chromium = await launchChromium('files-failure.png', () => system.logs());
  page = chromium.page;
});

afterAll(async () => {
  await chromium?.close();
  await system?.stop();
  if (person) rmSync(person, { recursive: true, force: true });
});

const shot = (name: string) => chromium.shot(name);
const text = (selector: string) => chromium.text(selector);

let flowStarted = Date.now();
/** Prints how far into the flow a step is (to see where its time goes). */
const step = (what: string) => console.log(`  ${what}: ${Date.now() - flowStarted} ms`);

async function timed<T>(flow: string, what: () => Promise<T>): Promise<T> {
  const started = Date.now();
  flowStarted = started;
  try {
    return await what();
  } finally {
    console.log(`flow ${flow}: ${Date.now() - started} ms`);
  }
}

/** The notes example as a marketplace bundle granted `$DOCUMENTS` (read). */
function notesBundle(): Uint8Array {
  const json = (v: unknown): Uint8Array => strToU8(JSON.stringify(v, null, 2));
  return zipSync({
    'manifest.json': json({
      id: APP,
      name: 'E2E Files',
      version: '1.0.0',
      description: 'Imports notes from a CSV file.',
      category: 'productivity',
      author: { name: 'E2E Tests' },
      entry: 'wasm',
      runtime: '>=0.1.0, <0.2.0',
    }),
    'action-schema.json': json({
      import: {
        title: 'Import notes',
        type: 'object',
        required: ['path'],
        properties: { path: { type: 'string', title: 'CSV file', minLength: 1 } },
      },
      list: { title: 'List notes', type: 'object', properties: {} },
    }),
    'ui-schema.json': json({}),
    'permissions.json': json({ filesystem: { read: ['$DOCUMENTS'] } }),
    'logic.wasm': new Uint8Array(readFileSync(notesWasm)),
  });
}

/** Runs the form's current action and waits for its end; returns the status line. */
async function runIt(): Promise<string> {
  await page.getByRole('button', { name: 'Run on browser desk' }).click();
  await expect.poll(() => text('#run-status'), { timeout: 20_000 }).toMatch(/^(Done|The app|Your desktop)/);
  return text('#run-status');
}

async function chooseAction(label: string): Promise<void> {
  await page.getByLabel('Action', { exact: true }).selectOption({ label });
}

describe('file fields (Chromium)', () => {
  it('browses the granted folders, uploads a file, and the app reads both', () =>
    chromium.explained(() =>
      timed('files', async () => {
        await system.publish(notesBundle());
        execFileSync(join(binDir, 'desktop-node'), ['--home', system.nodeHome, 'apps', 'install', APP, '--yes'], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        // The running node picks the install up (and compiles the module) by itself.
        await expect.poll(() => system.nodeOutput(), { timeout: 60_000 }).toMatch(/apps loaded[^\n]*e2e-files/);

        step('installed');
        await page.goto(system.httpUrl);
        await page.getByLabel('Email').fill(EMAIL);
        await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
        await page.getByRole('button', { name: 'Sign in' }).click();
        await page.waitForSelector('#signed-in-as');
        await page.goto(`${system.httpUrl}/#/run/${APP}`);
        await chooseAction('Import notes');
        const field = page.locator('#root_path');
        await field.waitFor();

        step('form shown');
        // (a) Browse: the app's own folder and Documents, then into Documents/lists.
        await page.click('#root_path-browse');
        const entry = (path: string) => page.locator(`.file-entry[data-path="${path}"]`);
        await entry('$DOCUMENTS').waitFor({ timeout: 15_000 });
        expect(await page.locator('.file-entry[data-path]').allTextContents()).toEqual(['▸ This app’s own files', '▸ Documents']);
        await entry('$DOCUMENTS').click();
        await entry('$DOCUMENTS/lists').click();
        await entry('$DOCUMENTS/lists/week.csv').waitFor();
        expect(await entry('$DOCUMENTS/lists/week.csv').textContent()).toContain('28 bytes');
        await shot('files-browse.png');
        await entry('$DOCUMENTS/lists/week.csv').click();
        expect(await field.inputValue()).toBe('$DOCUMENTS/lists/week.csv');
        expect(await page.locator('.file-browser').count()).toBe(0);
        expect(await runIt()).toMatch(/^Done/);
        expect(await text('#output')).toBe('imported 2 notes');

        step('picked file read');
        // (b) Upload from the browser: 300 KB (five chunks), so the desktop reports
        // progress on the way; the note is the short first column.
        const csv = `note,filler\nuploaded 0815,${'x'.repeat(300_000)}\n`;
        // Record what the progress bar showed while the upload ran (it is gone after).
        await page.evaluate(() => {
          const w = window as unknown as { seenProgress: number[] };
          w.seenProgress = [];
          new MutationObserver(() => {
            const bar = document.querySelector<HTMLProgressElement>('.file-upload progress');
            if (bar) w.seenProgress.push(bar.value);
          }).observe(document.body, { subtree: true, childList: true, attributes: true });
        });
        await page.setInputFiles('#root_path-file', {
          name: 'from browser?.csv',
          mimeType: 'text/csv',
          buffer: Buffer.from(csv),
        });
        await expect.poll(() => text('.file-stored'), { timeout: 20_000 }).toMatch(/^Uploaded from browser\?\.csv/);
        expect(await field.inputValue()).toBe('$APP_DATA/uploads/from browser_.csv');
        // The bar was there, and moved with the desktop's FILE_PROGRESS (256 KiB of 293 KB).
        const seen = await page.evaluate(() => (window as unknown as { seenProgress: number[] }).seenProgress);
        expect(seen.length).toBeGreaterThan(0);
        expect(Math.max(...seen)).toBe(87);
        await shot('files-uploaded.png');
        const uploads = join(system.nodeHome, `data/${APP}/files/uploads`);
        expect(readdirSync(uploads)).toEqual(['from browser_.csv']);
        expect(readFileSync(join(uploads, 'from browser_.csv'), 'utf8')).toBe(csv);
        expect(await runIt()).toMatch(/^Done/);
        expect(await text('#output')).toBe('imported 1 notes');

        step('uploaded file read');
        // A typed `~` path works; one outside the grant is refused in words.
        await field.fill('~/Documents/lists/week.csv');
        expect(await runIt()).toMatch(/^Done/);
        expect(await text('#output')).toBe('imported 2 notes');
        await field.fill('~/secret.csv');
        const failed = await runIt();
        expect(failed).toMatch(/^Your desktop refused the app a file \(.*secret\.csv is refused: it is not granted\)\. Apps may open only the folders you granted them\.$/);
        expect(await text('#run-error')).toContain('app_failed');
        await shot('files-refused.png');

        step('typed paths');
        // The app read what was chosen, uploaded and typed.
        await chooseAction('List notes');
        expect(await runIt()).toMatch(/^Done/);
        const listed = await text('#output');
        expect(listed).toContain('buy milk 4711');
        expect(listed).toContain('uploaded 0815');

        step('listed');
        // At phone width the picker fits: no sideways scrolling.
        await page.setViewportSize({ width: 390, height: 844 });
        await chooseAction('Import notes');
        await page.click('#root_path-browse');
        await entry('$DOCUMENTS').click();
        await entry('$DOCUMENTS/lists').waitFor();
        expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
        await shot('files-phone.png');
        await page.setViewportSize({ width: 1200, height: 900 });
      }),
    ));
});
