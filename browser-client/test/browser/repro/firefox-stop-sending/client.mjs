// The page side of the Firefox STOP_SENDING repro (README.md): one WebTransport stream per
// mode against server.py, printing what the page read (and how the read ended).
import puppeteer from 'puppeteer-core';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const hash = readFileSync(join(tmpdir(), 'firefox-stop-sending', 'hash.txt'), 'utf8').trim();
const engine = process.argv[2] ?? 'firefox';
const browser = engine === 'firefox'
  ? await puppeteer.launch({ browser: 'firefox', executablePath: '/usr/bin/firefox-esr', headless: true })
  : await puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
const page = await browser.newPage();
await page.goto('http://localhost:18766/');
for (const mode of ['plain', 'stopafter', 'stopfirst', 'clientfin']) {
  const out = await page.evaluate(async (hash, mode) => {
    const bytes = new Uint8Array(hash.match(/../g).map((h) => parseInt(h, 16)));
    const wt = new WebTransport('https://127.0.0.1:14433/wt', { serverCertificateHashes: [{ algorithm: 'sha-256', value: bytes }] });
    await wt.ready;
    const s = await wt.createBidirectionalStream();
    const w = s.writable.getWriter();
    await w.write(new TextEncoder().encode(mode));
    if (mode === 'clientfin') await w.close();
    const r = s.readable.getReader();
    let got = '';
    try {
      for (;;) { const { done, value } = await r.read(); if (done) break; got += new TextDecoder().decode(value); }
      got += ' [FIN]';
    } catch (e) { got += ` [ERROR ${e && e.name}: ${e && e.message}]`; }
    wt.close();
    return got;
  }, hash, mode);
  console.log(engine, mode.padEnd(10), out);
}
await browser.close();
