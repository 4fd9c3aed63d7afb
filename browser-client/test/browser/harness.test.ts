/**
 * The engine harness's own rules, without a browser: which engines and flows the
 * environment selects, and which engine the main suites drive (an unknown name is an
 * error, never an empty run or a silent Chromium run), and that every
 * known issue names an engine and flows that exist (a renamed flow must not leave a
 * stale entry that no longer skips anything).
 */

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { suiteEngine } from './chromium';
import { ENGINES } from './engines/driver';
import { selectedEngines, selectedFlows } from './engines/index';
import { FLOW_IDS, FLOWS, flowsFor, KNOWN_ISSUES } from './flows';

describe('engine selection', () => {
  it('defaults to Chromium, takes a list in the suite order, and all', () => {
    expect(selectedEngines(undefined)).toEqual(['chromium']);
    expect(selectedEngines('webkit, chromium')).toEqual(['chromium', 'webkit']);
    expect(selectedEngines('all')).toEqual(['chromium', 'firefox', 'webkit']);
  });

  it('refuses an unknown engine', () => {
    expect(() => selectedEngines('chromium,safari')).toThrow(/unknown engine "safari"/);
  });
});

describe('the main suites\' engine (AISA_BROWSER_ENGINE)', () => {
  it('defaults to Chromium and takes Firefox', () => {
    expect(suiteEngine(undefined)).toBe('chromium');
    expect(suiteEngine(' ')).toBe('chromium');
    expect(suiteEngine('firefox')).toBe('firefox');
  });

  it('refuses WebKit with the reason, and an unknown engine, instead of running Chromium', () => {
    expect(() => suiteEngine('webkit')).toThrow(/WebKitWebDriver 2\.50 speaks only classic WebDriver/);
    expect(() => suiteEngine('all')).toThrow(/unknown engine "all"/);
  });
});

describe('flow selection', () => {
  it('defaults to every flow, in order, and keeps the suite order', () => {
    expect(selectedFlows(FLOW_IDS, undefined)).toEqual(FLOW_IDS);
    expect(selectedFlows(FLOW_IDS, 'encrypted,run')).toEqual(['run', 'encrypted']);
    expect(FLOW_IDS.slice(0, 6)).toEqual(['sign-in', 'run', 'cancel', 'install', 'pairing', 'encrypted']);
  });

  it('refuses an unknown flow', () => {
    expect(() => selectedFlows(FLOW_IDS, 'run,login')).toThrow(/unknown flow "login"/);
  });
});

describe('flows per engine', () => {
  it('Chromium leaves to its main suites the flows they check, unless flows are named', () => {
    const ids = (fs: { id: string }[]) => fs.map((f) => f.id);
    const chromium = ids(flowsFor('chromium', FLOWS, undefined));
    expect(chromium).not.toContain('errors');
    expect(chromium).not.toContain('history');
    expect(chromium).toContain('run');
    expect(ids(flowsFor('chromium', FLOWS, 'history'))).toEqual(FLOW_IDS);
    expect(ids(flowsFor('webkit', FLOWS, undefined))).toEqual(FLOW_IDS);
    expect(ids(flowsFor('firefox', FLOWS, undefined))).toEqual(FLOW_IDS);
  });

  it('name a main suite that exists for every flow Chromium leaves', () => {
    for (const flow of FLOWS.filter((f) => f.chromiumSuite)) {
      for (const file of flow.chromiumSuite!.match(/[\w-]+\.test\.ts/g) ?? []) {
        expect(existsSync(join(__dirname, file)), `${flow.id}: ${file}`).toBe(true);
      }
      expect(flow.chromiumSuite).toMatch(/\.test\.ts/);
    }
  });
});

describe('known issues', () => {
  it('name real engines and flows, with a reason', () => {
    for (const issue of KNOWN_ISSUES) {
      expect(ENGINES).toContain(issue.engine);
      expect(issue.flows.length).toBeGreaterThan(0);
      for (const flow of issue.flows) expect(FLOW_IDS).toContain(flow);
      expect(issue.reason.length).toBeGreaterThan(80);
    }
  });
});
