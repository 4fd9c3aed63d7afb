/**
 * The web app in real Chromium with WebTransport removed from the page (deleted before
 * any of the app's code runs, so the browser looks like one without it), against a real
 * relay, desktop node and provider: it signs in, reaches the relay over the WebSocket
 * fallback (`/tunnel/browser`, the mux), says so in the header's transport indicator,
 * lists the desktop's apps and streams an action. The transport used is printed and
 * asserted; the time to the first chunk is printed.
 *
 * Then end-to-end encryption over the WebSocket: the browser pairs through the link
 * `desktop-node pair` prints, the desktop requires encryption (`[e2e] required`), and
 * the workspace's status and an action run sealed. Every WebSocket message between the
 * page and the relay's `/tunnel/browser` is recorded: that is every byte the relay gets
 * from and gives to the browser. In Chromium from the DevTools protocol (playwright's
 * `framesent` / `framereceived`); in Firefox in the page itself (the socket's `send` and
 * `message`, {@link RECORDER}), because playwright over WebDriver BiDi has no WebSocket
 * frame events.
 * Unsealed, the app id, the payload and the output are readable in them (checked, so
 * the search is shown to work on this path); sealed, none of them is.
 */

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINE, ENGINE_LABEL, launchChromium, type ChromiumPage } from './chromium';
import { EMAIL, PASSWORD, System } from './system';

const binDir = process.env.AISA_BIN_DIR ?? resolve(__dirname, '../../../target/debug');

let system: System;
let chromium: ChromiumPage;
let page: Page;
/** One WebSocket message, as recorded. */
type Frame = { dir: 'sent' | 'received'; data: Buffer };

/** Every message on the page's `/tunnel/browser` WebSockets, in order, from the DevTools protocol (Chromium). */
const wireFrames: Frame[] = [];

/**
 * Records, in the page, every message of its `/tunnel/browser` WebSockets as base64 in
 * `window.__wsFrames` (what the page hands to `send` and what `message` events bring),
 * installed before any of the app's code runs. Works in every engine.
 */
const RECORDER = `(() => {
  const frames = (window.__wsFrames = []);
  const b64 = (u8) => {
    let s = '';
    for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const keep = (dir, data) => {
    if (data instanceof Blob) {
      data.arrayBuffer().then((b) => frames.push({ dir, data: b64(new Uint8Array(b)) }));
    } else if (typeof data === 'string') {
      frames.push({ dir, data: b64(new TextEncoder().encode(data)) });
    } else if (data instanceof ArrayBuffer) {
      frames.push({ dir, data: b64(new Uint8Array(data)) });
    } else if (ArrayBuffer.isView(data)) {
      frames.push({ dir, data: b64(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)) });
    }
  };
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...args) {
      super(...args);
      if (!this.url.endsWith('/tunnel/browser')) return;
      this.addEventListener('message', (e) => keep('received', e.data));
      const send = this.send.bind(this);
      this.send = (data) => { keep('sent', data); return send(data); };
    }
  };
})()`;

/**
 * Every recorded message: in Chromium the DevTools protocol's (the bytes on the wire,
 * whatever the page's scripts do), elsewhere the page's own record.
 */
async function frames(): Promise<Frame[]> {
  if (ENGINE === 'chromium') return [...wireFrames];
  const inPage = await page.evaluate<{ dir: 'sent' | 'received'; data: string }[]>('window.__wsFrames || []');
  return inPage.map((f) => ({ dir: f.dir, data: Buffer.from(f.data, 'base64') }));
}

/** Forgets what was recorded so far (both records). */
async function clearFrames(): Promise<void> {
  wireFrames.length = 0;
  await page.evaluate('window.__wsFrames && (window.__wsFrames.length = 0)');
}

/** Which of `needles` appear in any recorded message (as UTF-8 bytes). */
async function readable(needles: string[]): Promise<string[]> {
  const all = await frames();
  return needles.filter((n) => all.some((f) => f.data.includes(Buffer.from(n, 'utf8'))));
}

beforeAll(async () => {
  system = await System.start();
  chromium = await launchChromium('websocket-failure.png', () => system.logs());
  page = chromium.page;
  await page.addInitScript(() => {
    delete (window as unknown as { WebTransport?: unknown }).WebTransport;
  });
  await page.addInitScript(RECORDER);
  page.on('websocket', (ws) => {
    if (!ws.url().endsWith('/tunnel/browser')) return;
    const keep = (dir: 'sent' | 'received') => (f: { payload: string | Buffer }) =>
      wireFrames.push({ dir, data: typeof f.payload === 'string' ? Buffer.from(f.payload, 'utf8') : Buffer.from(f.payload) });
    ws.on('framesent', keep('sent'));
    ws.on('framereceived', keep('received'));
  });
});

afterAll(async () => {
  await chromium?.close();
  await system?.stop();
});

const text = (selector: string) => chromium.text(selector);

describe(`the web app without WebTransport (${ENGINE_LABEL})`, () => {
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
      // Not sealed: the relay could read the app id, the payload and the output.
      expect(await readable(['hello-ai', '{"topic":"QUIC"}', 'Echo:'])).toEqual(['hello-ai', '{"topic":"QUIC"}', 'Echo:']);
      await chromium.shot('websocket-action-done.png');
    }));

  it('pairs, then with [e2e] required runs the workspace status and an action sealed over the WebSocket: the relay sees no plaintext', () =>
    chromium.explained(async () => {
      const node = (...args: string[]): string =>
        execFileSync(join(binDir, 'desktop-node'), ['--home', system.nodeHome, ...args], { encoding: 'utf8' });
      const printed = node('pair');
      const link = /^(http\S+#pair=\S+)$/m.exec(printed)?.[1];
      const fingerprint = /desktop key fingerprint: (\S+)/.exec(printed)?.[1];
      expect(link, printed).toBeTruthy();
      await page.goto(link!);
      await expect.poll(() => page.textContent('main'), { timeout: 15_000 }).toContain('Paired: actions on that desktop');
      expect(await page.textContent('main')).toContain(fingerprint!);
      expect(node('browsers', 'list')).toMatch(/\tactive\t/);

      const config = join(system.nodeHome, 'node.toml');
      const toml = readFileSync(config, 'utf8');
      expect(toml).toContain('[e2e]\nrequired = false');
      writeFileSync(config, toml.replace('[e2e]\nrequired = false', '[e2e]\nrequired = true'));
      const sealedStreams = () => system.logs().match(/end-to-end encrypted stream/g)?.length ?? 0;
      const before = sealedStreams();
      await system.stopNode();
      await system.startNode();

      // From here on, every byte between the page and the relay is recorded afresh.
      await clearFrames();
      await page.goto(`${system.httpUrl}/#/`);
      await expect.poll(() => chromium.text('#connection'), { timeout: 15_000 }).toBe('connected');
      expect(await page.getAttribute('#transport', 'data-transport')).toBe('websocket');
      await page.getByRole('link', { name: 'Workspace', exact: true }).click();
      const apps = page.getByRole('list', { name: 'Apps on browser desk' });
      await apps.waitFor({ timeout: 15_000 });
      // A plain GET_STATUS would be refused now: the list comes from a sealed one.
      await expect.poll(() => apps.textContent(), { timeout: 15_000 }).toMatch(/hello-ai/);

      await page.getByRole('link', { name: 'Open hello-ai on browser desk' }).click();
      await page.waitForSelector('#root_action');
      await expect.poll(() => page.textContent('main')).toContain(`End-to-end encrypted (desktop key ${fingerprint})`);
      const topic = 'sealed over the WebSocket';
      await page.fill('#root_payload', JSON.stringify({ topic }));
      await page.fill('#root_action', 'write');
      await page.focus('#root_action');
      await page.keyboard.press('Enter');
      await page.waitForSelector('#run-status:has-text("Done")', { timeout: 15_000 });
      expect(await text('#output')).toBe(`Echo: Write a short paragraph about ${topic}.`);
      const transport = await page.getAttribute('#transport', 'data-transport');
      console.log(`encrypted action: transport used: ${transport}`);
      expect(transport).toBe('websocket');
      // The desktop served the status (the page loaded after the restart) and the action as encrypted streams.
      expect(sealedStreams()).toBeGreaterThanOrEqual(before + 2);
      expect(system.logs()).not.toMatch(/accepts only end-to-end encrypted requests/);

      // What the relay saw: messages both ways, none of the plaintext.
      const seen = await frames();
      const sent = seen.filter((f) => f.dir === 'sent').reduce((n, f) => n + f.data.length, 0);
      const received = seen.filter((f) => f.dir === 'received').reduce((n, f) => n + f.data.length, 0);
      console.log(`encrypted over the WebSocket: the relay saw ${seen.length} messages (${sent} bytes in, ${received} bytes out)`);
      expect(sent).toBeGreaterThan(0);
      expect(received).toBeGreaterThan(0);
      // The streams were recorded: their open headers (which the relay must read) name the device.
      const deviceId = /^device_id = "([^"]+)"/m.exec(readFileSync(config, 'utf8'))?.[1];
      expect(deviceId).toBeTruthy();
      expect(await readable([deviceId!])).toEqual([deviceId]);
      expect(
        await readable(['hello-ai', topic, `{"topic":`, 'Echo:', 'Write a short paragraph', 'paragraph', 'sealed']),
        'plaintext in the bytes the relay splices',
      ).toEqual([]);
      await chromium.shot('websocket-encrypted.png');
    }));
});
