/**
 * Which engines and flows a run covers, and launching an engine by name.
 *
 * - `AISA_BROWSER_ENGINES`: a comma-separated list of `chromium`, `firefox`, `webkit`
 *   (or `all`); default `chromium`, so `npm run test:browser` needs only Chromium.
 * - `AISA_BROWSER_FLOWS`: a comma-separated list of flow ids (`../flows.ts`); default
 *   every flow. CI's smoke of the extra engines runs one (`run`).
 *
 * An unknown name is an error, not an empty run.
 */

import { launchFirefox } from './bidi';
import { ENGINES, type Driver, type EngineName } from './driver';
import { launchPlaywrightChromium } from './playwright';
import { launchWebKit } from './webdriver';

/** The engines `value` (`AISA_BROWSER_ENGINES`) selects, in {@link ENGINES} order. */
export function selectedEngines(value: string | undefined): EngineName[] {
  const names = (value ?? 'chromium')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (names.includes('all')) return [...ENGINES];
  for (const name of names) {
    if (!ENGINES.includes(name as EngineName)) {
      throw new Error(`AISA_BROWSER_ENGINES: unknown engine ${JSON.stringify(name)} (known: ${ENGINES.join(', ')}, all)`);
    }
  }
  return ENGINES.filter((e) => names.includes(e));
}

/** The flow ids `value` (`AISA_BROWSER_FLOWS`) selects (`known` is every flow's id, in order). */
export function selectedFlows(known: readonly string[], value: string | undefined): string[] {
  if (!value) return [...known];
  const names = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const name of names) {
    if (!known.includes(name)) {
      throw new Error(`AISA_BROWSER_FLOWS: unknown flow ${JSON.stringify(name)} (known: ${known.join(', ')})`);
    }
  }
  return known.filter((f) => names.includes(f));
}

/** Launches `engine` with one page. */
export function launch(engine: EngineName): Promise<Driver> {
  switch (engine) {
    case 'chromium':
      return launchPlaywrightChromium();
    case 'firefox':
      return launchFirefox();
    case 'webkit':
      return launchWebKit();
  }
}
