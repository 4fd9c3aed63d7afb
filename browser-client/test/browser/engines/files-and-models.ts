/**
 * Two flows for every engine (`../flows.ts` lists them with the others), so WebKit and
 * Firefox check what Chromium's main suites check:
 *
 * - `files` (Chromium: `files.test.ts`): an app granted one folder on the desktop (the
 *   notes example, its `import` action reads a CSV) is published and installed; its file
 *   field browses the granted folder (FILES_LIST), a file chosen there is read by the
 *   app; a small file uploaded from the browser (FILE_UPLOAD, chosen in the file input
 *   through the engine's own protocol) lands in the app's uploads folder on the desktop
 *   byte for byte and is read by the app too.
 * - `model` (Chromium: `devices.test.ts`): the node is restarted offering two models;
 *   the runner offers both, a run with the one picked reaches the fake provider under
 *   that name (its `/stats`), then the default again; the node is put back as it was.
 *
 * The granted folder is a temporary one (an absolute path in the app's permissions), so
 * the engines' node, which runs with the tester's own HOME, is never shown the tester's
 * Documents.
 */

import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Flow, FlowContext } from '../flows';
import { notesBundle } from '../notes-bundle';
import type { System } from '../system';
import { markByText, poll, textOf, waitFor, waitText, type Driver } from './driver';

/** The files flow's app. */
const FILES_APP = 'e2e-engine-files';

/** Asserts `cond`, with `message` when it does not hold. */
function check(cond: boolean, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

/** The granted folder of each system's files app (installed once per system). */
const grantedFolders = new WeakMap<System, Promise<string>>();

/**
 * Publishes the files app granted a fresh folder holding `lists/week.csv`, installs it on
 * the desktop, waits until the node has loaded it; returns the folder.
 */
function filesApp(ctx: FlowContext): Promise<string> {
  let folder = grantedFolders.get(ctx.system);
  if (!folder) {
    folder = (async () => {
      const dir = mkdtempSync(join(tmpdir(), 'aisa-flow-granted-'));
      // Kept while the app is installed (the suite's node may list it until it stops).
      process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
      mkdirSync(join(dir, 'lists'));
      writeFileSync(join(dir, 'lists/week.csv'), 'note\nbuy milk 4711\ncall Ada\n');
      await ctx.system.publish(notesBundle(FILES_APP, 'Engine Files', dir));
      ctx.node('apps', 'install', FILES_APP, '--yes');
      // The running node picks the install up (and compiles the module) by itself.
      await poll(
        'the node to load the files app',
        async () => ctx.system.nodeOutput(),
        (out) => new RegExp(`apps loaded[^\\n]*${FILES_APP}`).test(out),
        60_000,
      );
      return dir;
    })();
    grantedFolders.set(ctx.system, folder);
  }
  return folder;
}

/** The value of the input matching `selector`. */
function valueOf(d: Driver, selector: string): Promise<string> {
  return d.evaluate<string>(`(document.querySelector(${JSON.stringify(selector)}) || {}).value || ''`);
}

/** Runs the runner's form (its Run button) and returns the status line once the run ended. */
async function runForm(d: Driver): Promise<string> {
  await d.click(await markByText(d, 'button', 'Run on browser desk'));
  return waitText(d, '#run-status', /^(Done|The app|Your desktop)/, 20_000);
}

/**
 * `toml` (a node.toml) with `model = default` and `models = more` in its `[ai]` section
 * (whatever model lines it had there replaced; the section added when missing).
 */
export function withModels(toml: string, model: string, more: string[]): string {
  const lines = `model = ${JSON.stringify(model)}\nmodels = ${JSON.stringify(more)}\n`;
  const section = /^\[ai\][ \t]*\n((?:(?!\[)[^\n]*\n?)*)/m.exec(toml);
  if (!section) return `${toml.trimEnd()}\n\n[ai]\n${lines}`;
  const body = section[1]!.replace(/^models?\s*=[^\n]*\n?/gm, '');
  return toml.slice(0, section.index) + `[ai]\n${lines}${body}` + toml.slice(section.index + section[0].length);
}

/** The models the fake provider was asked for, in order. */
async function providerModels(system: System): Promise<string[]> {
  const res = await fetch(new URL('/stats', system.providerUrl));
  return ((await res.json()) as { models: string[] }).models;
}

/** The flows of this file, in the order a full run takes them. */
export const FILES_AND_MODEL_FLOWS: readonly Flow[] = [
  {
    id: 'files',
    title: "browses a folder the app was granted and picks a file there, uploads a small file into the app's folder on the desktop, and the app reads both",
    chromiumSuite: 'files.test.ts',
    async run(ctx) {
      const d = ctx.driver;
      await ctx.ensureSignedIn();
      await ctx.requireTunnel();
      const folder = await filesApp(ctx);
      await ctx.route(`#/run/${FILES_APP}`);
      await waitFor(d, '#action-choice');
      await waitText(d, 'button[data-device="browser desk"]', /browser desk\s*online/);
      await waitText(d, '#connection', 'connected');
      await d.select('#action-choice', 'import');
      await waitFor(d, '#root_path');

      // Browse: the app's own folder and the granted one, then into it.
      const entry = (path: string): string => `.file-entry[data-path=${JSON.stringify(path)}]`;
      await d.click('#root_path-browse');
      await waitFor(d, entry(folder));
      const roots = await d.evaluate<string[]>(
        "[...document.querySelectorAll('.file-entry[data-path]')].map((e) => e.textContent.trim())",
      );
      check(
        JSON.stringify(roots) === JSON.stringify(['▸ This app’s own files', `▸ ${folder}`]),
        `the granted folders listed: ${JSON.stringify(roots)}`,
      );
      await d.click(entry(folder));
      await waitFor(d, entry(`${folder}/lists`));
      await d.click(entry(`${folder}/lists`));
      const week = entry(`${folder}/lists/week.csv`);
      await waitText(d, week, /28 bytes/);
      await ctx.shot('files-browse.png');
      await d.click(week);
      await poll('the chosen path in the field', () => valueOf(d, '#root_path'), (v) => v === `${folder}/lists/week.csv`);
      check(!(await d.evaluate<boolean>("document.querySelector('.file-browser') !== null")), 'the list stays open after a file was chosen');
      const picked = await runForm(d);
      check(/^Done/.test(picked), `the run of the picked file: ${picked}`);
      await waitText(d, '#output', 'imported 2 notes');

      // Upload a small file chosen in the file input (through the engine's protocol).
      const local = mkdtempSync(join(tmpdir(), 'aisa-flow-upload-'));
      const name = `from ${d.engine}.csv`;
      const csv = `note\nuploaded from ${d.engine} 0815\n`;
      writeFileSync(join(local, name), csv);
      try {
        await d.setFile('#root_path-file', join(local, name));
        await waitText(d, '.file-stored', new RegExp(`^Uploaded from ${d.engine}\\.csv`), 20_000);
      } finally {
        rmSync(local, { recursive: true, force: true });
      }
      const stored = await valueOf(d, '#root_path');
      check(stored === `$APP_DATA/uploads/${name}`, `the field holds ${stored}`);
      const onDesktop = join(ctx.system.nodeHome, `data/${FILES_APP}/files/uploads`, name);
      check(readFileSync(onDesktop, 'utf8') === csv, `the desktop's ${onDesktop} differs from what was uploaded`);
      await ctx.shot('files-uploaded.png');
      const uploaded = await runForm(d);
      check(/^Done/.test(uploaded), `the run of the uploaded file: ${uploaded}`);
      await waitText(d, '#output', 'imported 1 notes');
      await ctx.readTransport();
    },
  },
  {
    id: 'model',
    title: 'offers the models the desktop has; a run with the one picked reaches the provider under that name',
    chromiumSuite: 'devices.test.ts',
    async run(ctx) {
      const d = ctx.driver;
      await ctx.ensureSignedIn();
      await ctx.requireTunnel();
      // The node offers two models from now until the end of the flow.
      const config = join(ctx.system.nodeHome, 'node.toml');
      const original = readFileSync(config, 'utf8');
      const changed = withModels(original, 'fake-small', ['fake-large']);
      await ctx.system.stopNode();
      writeFileSync(config, changed);
      try {
        await ctx.system.startNode();
        await ctx.openRunner('hello-ai');
        const options = (): Promise<string[]> =>
          d.evaluate<string[]>("[...(document.querySelector('#model-choice') || { options: [] }).options].map((o) => o.textContent)");
        await poll('the runner to offer both models', options, (o) => JSON.stringify(o) === '["fake-small (default)","fake-large"]');
        for (const model of ['fake-large', 'fake-small']) {
          await d.select('#model-choice', model);
          await poll('the choice to show', () => valueOf(d, '#model-choice'), (v) => v === model);
          await ctx.runFreeform('write', { topic: `the model ${model}` });
          await waitText(d, '#run-status', /^Done/, 20_000);
          check(
            (await textOf(d, '#output')) === `Echo: Write a short paragraph about the model ${model}.`,
            `output: ${await textOf(d, '#output')}`,
          );
          const asked = await providerModels(ctx.system);
          check(asked.at(-1) === model, `picked ${model}, the provider was asked for ${JSON.stringify(asked.slice(-3))}`);
          if (model === 'fake-large') await ctx.shot('model-choice.png');
        }
        await ctx.readTransport();
      } finally {
        await ctx.system.stopNode();
        writeFileSync(config, original);
        await ctx.system.startNode();
      }
    },
  },
];
