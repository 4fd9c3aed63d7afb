#!/usr/bin/env node
/**
 * Debian's Firefox ESR, started the way playwright-core's `firefox` (channel `moz-firefox`,
 * WebDriver BiDi) starts a browser, with a small WebDriver BiDi proxy in front of it.
 *
 * Why: playwright-core 1.65 sends, while it sets up every browser context, a few BiDi
 * commands Firefox ESR 153 does not have yet (see UNSUPPORTED below); Firefox answers
 * `unknown command` and the context fails. This proxy answers those commands with an
 * empty success and passes every other message through unchanged, both ways. So what
 * those commands would do (emulating `prefers-color-scheme`, the screen's size and
 * orientation) is not done in Firefox; no suite relies on it (the dark-mode test asks the
 * page's CSS, not an emulated media feature — see ../chromium.ts).
 *
 * How: playwright runs this file as the browser's executable (`executablePath`). It
 * starts the real Firefox (`$AISA_FIREFOX_BINARY`, default /usr/bin/firefox-esr) with the
 * same arguments, reads its "WebDriver BiDi listening on ws://…" line, listens on another
 * loopback port, and prints that line with its own address for playwright to read.
 * Firefox ends when this process ends (playwright kills the process group) and the other
 * way round. Every message the proxy answered itself is logged to stderr
 * (`[bidi-shim] answered …`), so a run's browser log shows what was not really done.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { WebSocketServer, WebSocket } = require('ws');

/** BiDi commands Firefox ESR 153 answers with `unknown command`, answered here with `{}`. */
const UNSUPPORTED = new Set([
  'emulation.setMediaFeaturesOverride',
  'emulation.setScreenOrientationOverride',
  'emulation.setScreenSettingsOverride',
]);

const firefox = spawn(process.env.AISA_FIREFOX_BINARY ?? '/usr/bin/firefox-esr', process.argv.slice(2), {
  stdio: ['ignore', 'inherit', 'pipe'],
});
const forward = (signal) => process.on(signal, () => firefox.kill(signal));
forward('SIGTERM');
forward('SIGINT');
firefox.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));

let pending = '';
firefox.stderr.on('data', (chunk) => {
  pending += chunk.toString();
  let nl;
  while ((nl = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, nl);
    pending = pending.slice(nl + 1);
    const m = /WebDriver BiDi listening on (ws:\/\/\S+)/.exec(line);
    if (m) listen(m[1]);
    else process.stderr.write(line + '\n');
  }
});

/** Starts the proxy in front of Firefox's BiDi endpoint `upstream` and announces it. */
function listen(upstream) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  server.on('listening', () => {
    process.stderr.write(`WebDriver BiDi listening on ws://127.0.0.1:${server.address().port}\n`);
  });
  server.on('connection', (client, req) => {
    const browser = new WebSocket(upstream.replace(/\/$/, '') + (req.url ?? ''));
    const early = [];
    browser.on('open', () => {
      for (const m of early.splice(0)) browser.send(m);
    });
    browser.on('message', (data, isBinary) => client.send(isBinary ? data : data.toString()));
    browser.on('close', () => client.close());
    browser.on('error', () => client.terminate());
    client.on('message', (data) => {
      const text = data.toString();
      let msg;
      try {
        msg = JSON.parse(text);
      } catch {
        msg = undefined;
      }
      if (msg && UNSUPPORTED.has(msg.method)) {
        process.stderr.write(`[bidi-shim] answered ${msg.method} itself (Firefox ESR has no such command)\n`);
        client.send(JSON.stringify({ type: 'success', id: msg.id, result: {} }));
        return;
      }
      if (browser.readyState === WebSocket.OPEN) browser.send(text);
      else early.push(text);
    });
    client.on('close', () => browser.close());
  });
}
