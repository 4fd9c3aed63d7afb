/**
 * The browser flows (`flows.ts`: sign-in, run with streaming, cancel, install with
 * approval, pairing, an encrypted action) in every selected engine, each against its own
 * real relay, desktop node and provider (`system.ts`): Chromium through playwright-core,
 * Firefox ESR over WebDriver BiDi (puppeteer-core), WebKitGTK's MiniBrowser over
 * WebDriver (WebKitWebDriver, under Xvfb). `engines/index.ts` says how to choose engines
 * and flows (`AISA_BROWSER_ENGINES`, `AISA_BROWSER_FLOWS`); the default is every flow in
 * Chromium.
 *
 * Per engine, `test-artifacts/engines/<engine>/` keeps the screenshots and
 * `record.json`: the browser's version, the protocol it was driven over, what it offers
 * for a session to the relay, and per flow passed / failed / skipped with the reason and
 * the transport the page used. The same lines are printed. A flow this engine cannot run
 * here is skipped with the measured reason (see `FlowContext.requireTunnel`), never
 * silently.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { artifactsOf, type Driver } from './engines/driver';
import { startHttpsFront, type HttpsFront } from './engines/https';
import { launch, selectedEngines, selectedFlows } from './engines/index';
import { FLOW_IDS, FLOWS, FlowContext, FlowSkipped, flowsFor, KNOWN_ISSUES, type FlowRecord } from './flows';
import { System } from './system';

const flows = FLOWS.filter((f) => selectedFlows(FLOW_IDS, process.env.AISA_BROWSER_FLOWS).includes(f.id));

for (const engine of selectedEngines(process.env.AISA_BROWSER_ENGINES)) {
  const engineFlows = flowsFor(engine, flows, process.env.AISA_BROWSER_FLOWS);
  for (const left of flows.filter((f) => !engineFlows.includes(f))) {
    const why = left.chromiumSuite ? `checked by ${left.chromiumSuite}` : `left to named runs: ${left.fullOnly}`;
    console.log(`[engines] ${engine} ${left.id}: not run here, ${why} (AISA_BROWSER_FLOWS=${left.id} runs it)`);
  }
  describe(`browser flows in ${engine}`, () => {
    const dir = artifactsOf(engine);
    let system: System;
    let driver: Driver;
    let ctx: FlowContext;
    let front: HttpsFront | undefined;
    const records: FlowRecord[] = [];

    beforeAll(async () => {
      system = await System.start();
      try {
        driver = await launch(engine);
      } catch (err) {
        throw new Error(
          `${engine} did not start (scripts/browsers.sh installs the engines): ${String(err)}`,
        );
      }
      // WebKitGTK keeps the relay's Secure refresh cookie only from https (engines/https.ts):
      // it loads the app through an https front, as behind a real deployment's proxy.
      if (engine === 'webkit') front = await startHttpsFront(system.httpUrl);
      ctx = new FlowContext(driver, system, (name) => driver.screenshot(join(dir, name)), front?.url);
      console.log(`[engines] ${engine}: ${driver.version} over ${driver.protocol}, the app from ${ctx.appUrl}`);
    });

    afterAll(async () => {
      const record = {
        engine,
        browser: driver?.version,
        protocol: driver?.protocol,
        app: ctx?.appUrl,
        tunnel: await ctx?.tunnelSupport().catch((e: unknown) => `not measured: ${String(e)}`),
        flows: records,
      };
      writeFileSync(join(dir, 'record.json'), `${JSON.stringify(record, null, 2)}\n`);
      await driver?.close();
      await front?.close();
      await system?.stop();
    });

    for (const flow of engineFlows) {
      it(`${flow.id}: ${flow.title}`, async (t) => {
        const started = Date.now();
        ctx.transport = undefined;
        const done = (status: FlowRecord['status'], reason?: string): void => {
          const entry: FlowRecord = { flow: flow.id, status, ms: Date.now() - started };
          if (reason) entry.reason = reason;
          if (ctx.transport) entry.transport = ctx.transport;
          records.push(entry);
          const how = ctx.transport ? ` (transport: ${ctx.transport})` : '';
          console.log(`[engines] ${engine} ${flow.id}: ${status}${how}${reason ? ` — ${reason}` : ''}`);
        };
        const known = KNOWN_ISSUES.find((k) => k.engine === engine && k.flows.includes(flow.id));
        try {
          await flow.run(ctx);
        } catch (err) {
          if (err instanceof FlowSkipped) {
            await driver.screenshot(join(dir, `skipped-${flow.id}.png`)).catch(() => undefined);
            done('skipped', err.reason);
            t.skip(`${engine} cannot run "${flow.id}" here: ${err.reason}`);
          }
          // Which transport the failed flow was on (when it got as far as a session).
          if (!ctx.transport && (await ctx.tunnelSupport().catch(() => null))?.usable) {
            await ctx.readTransport().catch(() => undefined);
          }
          const pageText = await driver.evaluate<string>('document.body.textContent').catch(() => '');
          if (known && known.error.test(`${String(err)}\n${pageText}`)) {
            await driver.screenshot(join(dir, `known-issue-${flow.id}.png`)).catch(() => undefined);
            done('skipped', `known issue: ${known.reason} (this run: ${String(err).split('\n')[0]})`);
            t.skip(`${engine} cannot finish "${flow.id}" here (known issue): ${known.reason}`);
          }
          done('failed', String(err).split('\n')[0]);
          await driver.screenshot(join(dir, `failure-${flow.id}.png`)).catch(() => undefined);
          const lines = await driver.consoleLines().catch((e: unknown) => [`(console not read: ${String(e)})`]);
          // The technical side of the errors the page shows (behind "Details").
          const details = await driver
            .evaluate<string[]>("[...document.querySelectorAll('details')].map((e) => e.textContent.trim())")
            .catch(() => []);
          throw new Error(
            `${engine} ${flow.id}: ${String(err)}\n--- page at ${await driver.url().catch(() => '?')}\n` +
              `--- details the page shows\n${details.join('\n')}\n` +
              `--- page console\n${lines.join('\n')}\n${system.logs()}`,
          );
        }
        if (known) {
          done('failed', 'a known issue no longer happens');
          throw new Error(
            `${engine} ${flow.id} passed, but KNOWN_ISSUES (flows.ts) says it fails with ${known.error}: ` +
              'remove it from the list (and from the report) now that it works',
          );
        }
        done('passed');
      });
    }
  });
}
