/**
 * The notes example (a wasm app whose `import` action reads a CSV file) as a marketplace
 * bundle granted one folder (read), for the browser tests of file fields: files.test.ts
 * (Chromium) and engines/files-and-models.ts (every engine). It only builds the bundle;
 * publishing and installing it are the tests' own.
 */

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { strToU8, zipSync } from 'fflate';

/** The notes example's module: `AISA_NOTES_WASM`, or the workspace's guest build. */
const notesWasm =
  process.env.AISA_NOTES_WASM ?? resolve(__dirname, '../../../target/guest/wasm32-unknown-unknown/release/notes.wasm');

/** The notes example as a bundle with this app `id` and `name`, granted `folder` (read). */
export function notesBundle(id: string, name: string, folder: string): Uint8Array {
  const json = (v: unknown): Uint8Array => strToU8(JSON.stringify(v, null, 2));
  return zipSync({
    'manifest.json': json({
      id,
      name,
      version: '1.0.0',
      description: 'Imports notes from a CSV file.',
      category: 'productivity',
      author: { name: 'E2E Tests' },
      entry: 'wasm',
      runtime: '>=0.1.0, <0.2.0',
    }),
    'action-schema.json': json({
      import: {
        title: 'Import notes',
        type: 'object',
        required: ['path'],
        properties: { path: { type: 'string', title: 'CSV file', minLength: 1 } },
      },
      list: { title: 'List notes', type: 'object', properties: {} },
    }),
    'ui-schema.json': json({}),
    'permissions.json': json({ filesystem: { read: [folder] } }),
    'logic.wasm': new Uint8Array(readFileSync(notesWasm)),
  });
}
