/**
 * File fields in real Chromium against a real relay and desktop node (docs/protocol.md,
 * "Files"): an app granted `$DOCUMENTS` (the notes example, a wasm app whose `import`
 * action reads a CSV file) is published and installed; its form's file field browses
 * the granted folders on the desktop (FILES_LIST) and a file chosen there is read by the
 * action; a file uploaded from the browser (FILE_UPLOAD, with a progress bar) lands in
 * the app's data folder on the desktop and is read by the action too; a typed `~/…` path
 * works; a typed path outside the grant is refused in words; at phone width the picker
 * fits. A large upload (48 MB; the node's cap is raised to 64 MiB for it) is cancelled
 * with its Cancel button mid-way: the page says so, and the app's uploads folder on the
 * desktop holds neither the file nor a partial one.
 *
 * The node runs with its own HOME (so `$DOCUMENTS` is a folder of this test). Screenshots
 * land in browser-client/test-artifacts/files-*.png; the flow's time is printed.
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, type ChromiumPage } from './chromium';
import { notesBundle } from './notes-bundle';
import { EMAIL, PASSWORD, System } from './system';

const root = resolve(__dirname, '../../..');
const binDir = process.env.AISA_BIN_DIR ?? join(root, 'target/debug');
const APP = 'e2e-files';
/** The node's upload cap in this test: 64 MiB, room for {@link BIG}. */
const BIG_CAP = 64 << 20;
/** The upload the Cancel test stops mid-way: 48 MB. */
const BIG = 48 << 20;

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
  // Room for the large upload the Cancel test stops mid-way (read when the node starts).
  await system.stopNode();
  const config = join(system.nodeHome, 'node.toml');
  const toml = readFileSync(config, 'utf8');
  const cap = 'max_upload_bytes = 8388608';
  if (!toml.includes(cap)) throw new Error(`no "${cap}" in node.toml:\n${toml}`);
  writeFileSync(config, toml.replace(cap, `max_upload_bytes = ${BIG_CAP}`));
  await system.startNode();
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

/** Runs the form's current action and waits for its end; returns the status line. */
async function runIt(): Promise<string> {
  await page.getByRole('button', { name: 'Run on browser desk' }).click();
  await expect.poll(() => text('#run-status'), { timeout: 20_000 }).toMatch(/^(Done|The app|Your desktop)/);
  return text('#run-status');
}

async function chooseAction(label: string): Promise<void> {
  await page.getByLabel('Action', { exact: true }).selectOption({ label });
}

let installing: Promise<void> | undefined;
/** Publishes the app and installs it on the desktop, once for the tests of this file. */
function installed(): Promise<void> {
  installing ??= (async () => {
    await system.publish(notesBundle(APP, 'E2E Files', '$DOCUMENTS'));
    execFileSync(join(binDir, 'desktop-node'), ['--home', system.nodeHome, 'apps', 'install', APP, '--yes'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // The running node picks the install up (and compiles the module) by itself.
    await expect.poll(() => system.nodeOutput(), { timeout: 60_000 }).toMatch(/apps loaded[^\n]*e2e-files/);
  })();
  return installing;
}

/** Signs in with the form unless the page is signed in already. */
async function signIn(): Promise<void> {
  await page.goto(system.httpUrl);
  await page.waitForSelector('#signed-in-as, #email');
  if (await page.locator('#signed-in-as').count()) return;
  await page.getByLabel('Email').fill(EMAIL);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('#signed-in-as');
}

/** The names in the app's uploads folder on the desktop (partial files included). */
function uploadsOnDesktop(): string[] {
  try {
    return readdirSync(join(system.nodeHome, `data/${APP}/files/uploads`)).sort();
  } catch {
    return [];
  }
}

describe('file fields (Chromium)', () => {
  it('browses the granted folders, uploads a file, and the app reads both', () =>
    chromium.explained(() =>
      timed('files', async () => {
        await installed();

        step('installed');
        await signIn();
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
        // (b) Upload from the browser: 1.1 MB (17 chunks), so the desktop reports
        // progress four times on the way (FILE_PROGRESS every 256 KiB), with chunks in
        // between for the page to draw each; the note is the short first column.
        const csv = `note,filler\nuploaded 0815,${'x'.repeat(1_100_000)}\n`;
        const reported = [1, 2, 3, 4].map((k) => Math.round(((k * 256 * 1024) / csv.length) * 100));
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
        // The bar was there, and moved with the desktop's FILE_PROGRESS only (24, 48, 71
        // and 95 %). Not every report need be drawn (a report and the next can land in
        // one render: CI once drew none of the single report a 300 KB upload had), but
        // one of four is.
        const seen = await page.evaluate(() => (window as unknown as { seenProgress: number[] }).seenProgress);
        expect(seen.length).toBeGreaterThan(0);
        expect(seen.filter((v) => v !== 0 && !reported.includes(v))).toEqual([]);
        expect(seen.some((v) => reported.includes(v)), `seen ${seen.join(', ')}`).toBe(true);
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

  it('cancels a large upload mid-way: the page says so and the desktop keeps nothing of it', () =>
    chromium.explained(() =>
      timed('files-cancel', async () => {
        await installed();
        await signIn();
        await page.goto(`${system.httpUrl}/#/run/${APP}`);
        await chooseAction('Import notes');
        const field = page.locator('#root_path');
        await field.waitFor();
        const before = await field.inputValue();
        const kept = uploadsOnDesktop().filter((n) => !n.startsWith('.partial-'));

        step('form shown');
        const big = join(person, 'big.csv');
        writeFileSync(big, Buffer.alloc(BIG, 'x'));
        await page.setInputFiles('#root_path-file', big);
        // Mid-way: the desktop has reported some of it (FILE_PROGRESS every 256 KiB) and
        // holds the partial file.
        const label = page.locator('.file-upload label');
        await expect.poll(() => text('.file-upload label'), { timeout: 20_000 }).toMatch(/^Uploading big\.csv: [\d.]+ (KB|MB) of 48\.0 MB$/);
        const partial = () => uploadsOnDesktop().filter((n) => n.startsWith('.partial-'));
        await expect.poll(partial, { timeout: 10_000 }).toHaveLength(1);
        const shown = (await label.textContent()) ?? '';
        const progress = await page.locator('.file-upload progress').evaluate((el: HTMLProgressElement) => el.value);
        expect(progress).toBeLessThan(100);
        await shot('files-upload-running.png');
        await page.getByRole('button', { name: 'Cancel upload' }).click();
        step(`cancel clicked at "${shown}" (${progress} %)`);

        // The page says so, the bar is gone, the field is as it was.
        await expect
          .poll(() => text('.file-cancelled'), { timeout: 15_000 })
          .toBe('Upload of big.csv cancelled; nothing of it was kept on your desktop.');
        expect(await page.locator('.file-upload').count()).toBe(0);
        expect(await page.locator('.file-stored').count()).toBe(0);
        expect(await field.inputValue()).toBe(before);
        expect(await page.locator('#root_path-upload').isEnabled()).toBe(true);
        await shot('files-upload-cancelled.png');
        // What the page says is already true: the desktop answered the CANCEL after
        // removing the partial file, and kept no big.csv.
        expect(uploadsOnDesktop()).toEqual(kept);
        expect(system.nodeOutput()).not.toMatch(/upload stored[^\n]*big\.csv/);
        step('nothing kept');
      }),
    ));
});
