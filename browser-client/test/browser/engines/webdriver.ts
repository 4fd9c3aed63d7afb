/**
 * WebKit as a {@link Driver}: Debian's WebKitGTK MiniBrowser driven by WebKitWebDriver
 * (package `webkit2gtk-driver`) over classic W3C WebDriver, on an Xvfb display of its
 * own (package `xvfb`; MiniBrowser has no headless mode).
 *
 * WebKitWebDriver 2.50 speaks only classic WebDriver (no BiDi), so this file holds the
 * few endpoints the {@link Driver} surface needs (new session, navigate, execute, find,
 * click, clear, send keys (text, or a file for a file input), screenshot, delete
 * session) as plain JSON over HTTP (https://www.w3.org/TR/webdriver2/); a WebDriver
 * library would bring a dozen packages for nine requests. Classic WebDriver has no console events: a hook installed after
 * each navigation keeps what the page logs ({@link CONSOLE_HOOK}).
 *
 * Xvfb and WebKitWebDriver are started here, on a free display and a free port, and
 * stopped by `close()`.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { CONSOLE_HOOK, type Driver, type Key } from './driver';

/** The MiniBrowser WebKitWebDriver starts (Debian's libwebkit2gtk-4.1-0 ships it). */
const MINIBROWSER = process.env.WEBKIT_MINIBROWSER ?? '/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser';

/** The W3C key codes of the keys flows press. */
const KEYS: Record<Key, string> = { Enter: '\uE007', Escape: '\uE00C', Tab: '\uE004' };

/** The property a W3C element reference is keyed by. */
const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

/** A free TCP port on loopback (bound and released; the driver binds it next). */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolvePort(address.port) : reject(new Error('no port'))));
    });
  });
}

/** Starts Xvfb on the first free display (`-displayfd`) and resolves with `:N`. */
function startXvfb(): Promise<{ proc: ChildProcess; display: string }> {
  return new Promise((resolveDisplay, reject) => {
    const proc = spawn('Xvfb', ['-displayfd', '3', '-screen', '0', '1280x1024x24', '-nolisten', 'tcp'], {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const fd3 = proc.stdio[3] as NodeJS.ReadableStream;
    let out = '';
    fd3.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^(\d+)\n/.exec(out);
      if (m) resolveDisplay({ proc, display: `:${m[1]}` });
    });
    proc.once('error', (e) => reject(new Error(`Xvfb did not start (package xvfb): ${e.message}`)));
    proc.once('exit', (code) => reject(new Error(`Xvfb exited (${code}): ${stderr}`)));
  });
}

/** Sends SIGTERM and waits (at most 5 s, then SIGKILL). */
async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/** Launches MiniBrowser through WebKitWebDriver under a fresh Xvfb, window 1200×900. */
export async function launchWebKit(): Promise<Driver> {
  const xvfb = await startXvfb();
  let driverProc: ChildProcess | undefined;
  try {
    const port = await freePort();
    driverProc = spawn(process.env.WEBKIT_WEBDRIVER ?? 'WebKitWebDriver', [`--port=${port}`], {
      env: { ...process.env, DISPLAY: xvfb.display },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let driverOutput = '';
    driverProc.stdout?.on('data', (d: Buffer) => (driverOutput += d.toString()));
    driverProc.stderr?.on('data', (d: Buffer) => (driverOutput += d.toString()));
    const base = `http://127.0.0.1:${port}`;

    /** One WebDriver command; throws with the driver's error and message. */
    const send = async <T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> => {
      const res = await fetch(base + path, {
        method,
        headers: { 'Content-Type': 'application/json' },
        body: method === 'POST' ? JSON.stringify(body ?? {}) : undefined,
      });
      const json = (await res.json()) as { value: T & { error?: string; message?: string } };
      if (!res.ok) throw new Error(`WebDriver ${method} ${path}: ${json.value?.error}: ${json.value?.message}`);
      return json.value;
    };

    // The driver listens a moment after it starts.
    const ready = Date.now() + 10_000;
    for (;;) {
      try {
        if ((await send<{ ready: boolean }>('GET', '/status')).ready) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > ready) throw new Error(`WebKitWebDriver did not answer on ${base}: ${driverOutput}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const session = await send<{ sessionId: string; capabilities: { browserName: string; browserVersion: string } }>(
      'POST',
      '/session',
      {
        capabilities: {
          // acceptInsecureCerts: the https front's certificate is self-signed (engines/https.ts).
          alwaysMatch: {
            acceptInsecureCerts: true,
            'webkitgtk:browserOptions': { binary: MINIBROWSER, args: ['--automation'] },
          },
        },
      },
    );
    const s = `/session/${session.sessionId}`;
    await send('POST', `${s}/window/rect`, { width: 1200, height: 900 });

    const element = async (selector: string): Promise<string> => {
      const found = await send<Record<string, string>>('POST', `${s}/element`, { using: 'css selector', value: selector });
      return found[ELEMENT]!;
    };
    /** Runs `expression` (awaited when a promise) in the page. */
    const evaluate = async <T>(expression: string): Promise<T> => {
      const script = `const done = arguments[arguments.length - 1];
        Promise.resolve().then(() => (${expression})).then(
          (value) => done({ ok: value === undefined ? null : value }),
          (err) => done({ error: String(err && err.stack || err) }));`;
      const out = await send<{ ok?: T; error?: string }>('POST', `${s}/execute/async`, { script, args: [] });
      if (out.error !== undefined) throw new Error(`in the page: ${out.error}`);
      return out.ok as T;
    };
    const procs = { xvfb: xvfb.proc, driver: driverProc };

    return {
      engine: 'webkit',
      version: `${session.capabilities.browserName}/${session.capabilities.browserVersion}`,
      protocol: 'classic WebDriver (WebKitWebDriver, Xvfb)',
      async goto(url) {
        await send('POST', `${s}/url`, { url });
        await evaluate(CONSOLE_HOOK);
      },
      url: () => send<string>('GET', `${s}/url`),
      evaluate,
      async click(selector) {
        await send('POST', `${s}/element/${await element(selector)}/click`);
      },
      async fill(selector, value) {
        const id = await element(selector);
        await send('POST', `${s}/element/${id}/clear`);
        // An empty value still types something, so the page sees an input event for it.
        await send('POST', `${s}/element/${id}/value`, { text: value === '' ? ' \uE003' : value });
      },
      async select(selector, value) {
        // Element Click on the option selects it (and fires input and change), as a
        // person's choice in the list does.
        await send('POST', `${s}/element/${await element(`${selector} option[value=${JSON.stringify(value)}]`)}/click`);
      },
      async setFile(selector, path) {
        // Element Send Keys on a file input gives it the files named (no interactability
        // check for file inputs: the input may be hidden behind its button).
        await send('POST', `${s}/element/${await element(selector)}/value`, { text: path });
      },
      async press(selector, key) {
        // Focus by script, then a key press through the actions API: it goes to the
        // focused element as a person's would, whatever kind of element that is.
        await send('POST', `${s}/execute/sync`, { script: 'arguments[0].focus()', args: [{ [ELEMENT]: await element(selector) }] });
        const value = KEYS[key];
        await send('POST', `${s}/actions`, {
          actions: [{ type: 'key', id: 'keyboard', actions: [{ type: 'keyDown', value }, { type: 'keyUp', value }] }],
        });
        await send('DELETE', `${s}/actions`);
      },
      async resize(width, height) {
        // Classic WebDriver sets the window; MiniBrowser's window adds its toolbar, so the
        // window is grown until the page's own viewport (innerWidth/innerHeight) is the size.
        await send('POST', `${s}/window/rect`, { width, height });
        const inner = await evaluate<[number, number]>('[window.innerWidth, window.innerHeight]');
        await send('POST', `${s}/window/rect`, { width: width + (width - inner[0]), height: height + (height - inner[1]) });
      },
      async screenshot(path) {
        const png = await send<string>('GET', `${s}/screenshot`);
        writeFileSync(path, Buffer.from(png, 'base64'));
      },
      consoleLines: async () => {
        const lines = await evaluate<string[] | null>('window.__harnessConsole || null').catch(() => null);
        return lines ?? ['(no console hook in this page)'];
      },
      async close() {
        await send('DELETE', s).catch(() => undefined);
        await stop(procs.driver);
        await stop(procs.xvfb);
      },
    };
  } catch (err) {
    if (driverProc) await stop(driverProc);
    await stop(xvfb.proc);
    throw err;
  }
}
