/**
 * The Devices page and the model choice (protocol 1.2) in real Chromium, against a real
 * relay, desktop node and the local fake provider:
 *
 * - the desktop node runs with two models (`AISA_AI_MODEL=fake-small`,
 *   `AISA_AI_MODELS=fake-large`) and without a JavaScript runtime, and has a JavaScript
 *   app installed (the seo-writer example's bundle files, as the installer leaves them):
 *   the Devices page shows the provider and both models (never a key) and says that app
 *   "can't run on this desktop" with the desktop's reason; the workspace lists it the
 *   same way instead of leaving it out;
 * - the runner offers the two models; a run with the non-default one reaches the fake
 *   provider with that model's name (read back from the provider's `/stats`), a run left
 *   on the default with the default's;
 * - at phone width (390 px) the Devices page does not scroll sideways.
 *
 * Screenshots land in browser-client/test-artifacts/devices-*.png; each flow's time is
 * printed (`flow …: N ms`).
 */

import { copyFileSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, type ChromiumPage } from './chromium';
import { EMAIL, PASSWORD, System } from './system';

let system: System;
let chromium: ChromiumPage;

const DEVICE = 'browser desk';

beforeAll(async () => {
  system = await System.start({
    nodeEnv: {
      AISA_AI_MODEL: 'fake-small',
      AISA_AI_MODELS: 'fake-large',
      // A set variable that points nowhere: this node has no JavaScript runtime.
      AISA_JS_RUNTIME: '/nonexistent/aisa-js-runtime.wasm',
    },
  });
  // A JavaScript app in the node's apps folder (the example's bundle files and the
  // state the installer writes), then the generation marker the node watches, so it
  // reloads its apps as after an install.
  const apps = join(system.nodeHome, 'miniapps');
  const example = resolve(__dirname, '../../../examples/seo-writer');
  const dir = join(apps, 'seo-writer', '0.1.0');
  mkdirSync(dir, { recursive: true });
  for (const name of readdirSync(example)) {
    if (statSync(join(example, name)).isFile()) copyFileSync(join(example, name), join(dir, name));
  }
  writeFileSync(join(apps, 'seo-writer', 'state.json'), JSON.stringify({ active: '0.1.0', enabled: true }));
  writeFileSync(join(apps, '.generation'), `devices-test-${Date.now()}`);
  chromium = await launchChromium('devices-failure.png', () => system.logs());
});

afterAll(async () => {
  await chromium?.close();
  await system?.stop();
});

async function timed<T>(flow: string, what: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await what();
  } finally {
    console.log(`flow ${flow}: ${Date.now() - started} ms`);
  }
}

/** The models the fake provider was asked for, in order. */
async function providerModels(): Promise<string[]> {
  const res = await fetch(new URL('/stats', system.providerUrl));
  return ((await res.json()) as { models: string[] }).models;
}

describe('devices page and model choice (Chromium)', () => {
  it('shows the provider, the models and the app that cannot run; a run uses the chosen model', () =>
    chromium.explained(() =>
      timed('devices', async () => {
        const { page } = chromium;
        // The node has reloaded its apps and found the JavaScript app it cannot run.
        await expect.poll(() => system.nodeOutput(), { timeout: 15_000 }).toMatch(/app not loaded/);

        await page.goto(system.httpUrl);
        await page.getByLabel('Email').fill(EMAIL);
        await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
        await page.getByRole('button', { name: 'Sign in' }).click();
        await page.waitForSelector('#signed-in-as');

        await page.goto(`${system.httpUrl}/#/devices`);
        const row = page.locator('.device-row').first();
        await expect
          .poll(() => chromium.text('.device-row .ai-provider'), { timeout: 15_000 })
          .toBe('openai: fake-small (default), fake-large');
        const cannot = page.getByRole('list', { name: `Apps that can't run on ${DEVICE}` });
        await expect.poll(() => cannot.textContent(), { timeout: 10_000 }).toMatch(
          /seo-writer|SEO Writer/,
        );
        const line = ((await cannot.textContent()) ?? '').trim();
        expect(line).toMatch(/^(seo-writer|SEO Writer) 0\.1\.0 can’t run on this desktop: This desktop has no JavaScript runtime/);
        // Names only: nothing on the page about the key itself.
        expect(await row.textContent()).not.toContain('sk-');
        await chromium.shot('devices-page.png');

        // The workspace lists it too, rather than leaving it out.
        await page.goto(`${system.httpUrl}/#/`);
        await expect
          .poll(() => page.getByRole('list', { name: `Apps that can't run on ${DEVICE}` }).textContent(), {
            timeout: 10_000,
          })
          .toContain('can’t run on this desktop');

        // The runner offers both models; a run with the other one reaches the provider
        // with its name.
        await page.goto(`${system.httpUrl}/#/run/hello-ai`);
        await page.waitForSelector('#root_action');
        const choice = page.locator('#model-choice');
        // The options' texts in one evaluate (allTextContents crashed Firefox's content process elsewhere).
        const options = (): Promise<string[]> =>
          choice.evaluate((el: HTMLSelectElement) => [...el.options].map((o) => o.textContent ?? ''));
        await expect.poll(options, { timeout: 10_000 }).toEqual([
          'fake-small (default)',
          'fake-large',
        ]);
        await choice.selectOption('fake-large');
        await page.fill('#root_action', 'write');
        await page.fill('#root_payload', JSON.stringify({ topic: 'the chosen model' }));
        await page.getByRole('button', { name: `Run on ${DEVICE}` }).click();
        await expect.poll(() => chromium.text('#run-status'), { timeout: 20_000 }).toMatch(/^Done/);
        expect((await providerModels()).at(-1)).toBe('fake-large');
        await chromium.shot('devices-model-choice.png');

        // Back on the default: the provider is asked for the default model.
        await choice.selectOption('fake-small');
        await page.getByRole('button', { name: `Run on ${DEVICE}` }).click();
        await expect.poll(() => chromium.text('#run-status'), { timeout: 20_000 }).toMatch(/^Done/);
        expect((await providerModels()).at(-1)).toBe('fake-small');

        // At phone width (390 px) the Devices page, reasons and all, does not scroll sideways.
        await page.setViewportSize({ width: 390, height: 844 });
        await page.goto(`${system.httpUrl}/#/devices`);
        await expect
          .poll(() => chromium.text('.device-row .ai-provider'), { timeout: 15_000 })
          .toBe('openai: fake-small (default), fake-large');
        await expect.poll(() => cannot.textContent(), { timeout: 10_000 }).toContain('can’t run on this desktop');
        expect(await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)).toBeLessThanOrEqual(0);
        await chromium.shot('devices-phone.png');
        await page.setViewportSize({ width: 1200, height: 900 });
      }),
    ));
});
