/**
 * One flow for every engine (`../flows.ts` lists it with the others), so WebKit and
 * Firefox check what Chromium's `app.test.ts` checks ("says so when the install is denied
 * on the desktop"): an app published to the marketplace is requested for the desktop from
 * its detail page, the request is denied on the desktop (`desktop-node apps deny`), and
 * the page says so, bound to that decision: never "installed".
 */

import type { Flow } from '../flows';
import { wasmBundle } from '../system';
import { markByText, poll, textOf, waitText } from './driver';

/** The app this flow asks for and the desktop refuses. */
const REFUSED = {
  id: 'e2e-refused',
  name: 'E2E Refused',
  version: '1.0.0',
  description: 'An app the desktop will not install.',
  category: 'writing',
  actionSchema: {
    write: {
      title: 'Write a paragraph',
      type: 'object',
      properties: { topic: { type: 'string', title: 'Topic', minLength: 1, maxLength: 200 } },
      required: ['topic'],
    },
  },
  permissions: { ai: true },
};

/** The systems this flow published its app on (once each). */
const published = new WeakSet<object>();

/** The flows of this file. */
export const INSTALL_FLOWS: readonly Flow[] = [
  {
    id: 'install-denied',
    title: 'says so when the install is denied on the desktop',
    chromiumSuite: 'app.test.ts (install denied)',
    async run(ctx) {
      const d = ctx.driver;
      await ctx.ensureSignedIn();
      await ctx.requireTunnel();
      if (!published.has(ctx.system)) {
        await ctx.system.publish(wasmBundle(REFUSED));
        published.add(ctx.system);
      }
      await ctx.route(`#/marketplace/${REFUSED.id}`);
      await poll('the app detail page', () => markByText(d, 'h1, h2, h3', REFUSED.name), () => true);
      await waitText(d, 'button[data-device="browser desk"]', /browser desk\s*online/);
      await d.click(await poll('the install button', () => markByText(d, 'button', 'Install on browser desk'), () => true));
      await waitText(d, '#install-status', /^Waiting for approval on your desktop/, 15_000);
      await poll('the desktop to take the refusal', async () => ctx.node('apps', 'deny', REFUSED.id), () => true, 10_000);
      await waitText(d, '#install-status', /^The install was denied on browser desk\./, 30_000);
      const status = await textOf(d, '#install-status');
      if (/Installed/.test(status)) throw new Error(`the page says installed after the denial: ${status}`);
      const apps = ctx.node('apps', 'list');
      if (apps.includes(REFUSED.id)) throw new Error(`the desktop lists the denied app:\n${apps}`);
      await ctx.readTransport();
      await ctx.shot('install-denied.png');
    },
  },
];
