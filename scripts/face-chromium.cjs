// Drives the desktop face in Chromium: opens the login URL `desktop-node face` printed,
// waits for the install request of APP_ID, screenshots it, clicks Approve, waits for
// "installed …", screenshots, shows a pairing QR code, screenshots. Prints one JSON line
// at the end: {permissions, result, url_has_token}. Run by desktop-node/tests/face.rs
// (`chromium_clicks_approve_and_keeps_screenshots`, see scripts/face-screenshots.sh).
//
// Usage: node scripts/face-chromium.cjs LOGIN_URL OUT_DIR APP_ID
// Headed when DISPLAY is set (Xvfb), headless otherwise. Chromium: $CHROMIUM or
// /usr/bin/chromium; playwright-core from browser-client/node_modules (or
// $PLAYWRIGHT_CORE).
'use strict';

const path = require('node:path');
const fs = require('node:fs');

const { chromium } = require(
  process.env.PLAYWRIGHT_CORE || path.join(__dirname, '../browser-client/node_modules/playwright-core'),
);

const [url, outDir, appId] = process.argv.slice(2);
if (!url || !outDir || !appId) {
  console.error('usage: node scripts/face-chromium.cjs LOGIN_URL OUT_DIR APP_ID');
  process.exit(2);
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: !process.env.DISPLAY,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1000, height: 1000 } });
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  const shot = (name) => page.screenshot({ path: path.join(outDir, name), fullPage: true });
  try {
    await page.goto(url);
    // /login traded the token for the cookie and sent the page to /.
    const urlHasToken = page.url().includes('token=');
    await page.waitForFunction(
      () => document.getElementById('status').textContent.startsWith('Connected'),
      null,
      { timeout: 30000 },
    );
    const approve = page.getByTestId(`approve-${appId}`);
    await approve.waitFor({ timeout: 30000 });
    const permissions = await page
      .getByTestId(`request-${appId}`)
      .getByTestId('permissions')
      .locator('li')
      .allTextContents();
    await shot('face-1-request.png');
    await approve.click();
    await page.waitForFunction(
      () => /^installed /.test(document.querySelector('[data-testid=decision-result]').textContent),
      null,
      { timeout: 30000 },
    );
    const result = (await page.getByTestId('decision-result').textContent()).trim();
    await page.getByTestId(`approve-${appId}`).waitFor({ state: 'detached', timeout: 10000 });
    await shot('face-2-approved.png');
    await page.click('#pair-button');
    await page.locator('#qr svg').waitFor({ timeout: 10000 });
    await shot('face-3-pairing.png');
    console.log(JSON.stringify({ permissions, result, url_has_token: urlHasToken }));
  } catch (err) {
    await shot('face-failure.png').catch(() => undefined);
    throw new Error(`${err.stack || err}\n--- page console\n${consoleLines.join('\n')}`);
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(String(err));
  process.exit(1);
});
