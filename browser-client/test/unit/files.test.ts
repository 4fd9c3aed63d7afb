/**
 * Files for form file fields (lib/files.ts, RelayClient.uploadFile) against a fake relay:
 * FILES_LIST on a Control stream, an upload in 64 KiB FILE_CHUNKs with the desktop's
 * progress, a refusal over the desktop's cap, a cancel; which schema fields are file
 * fields; sizes and labels in words.
 */

import { describe, expect, it } from 'vitest';
import {
  FILE_WIDGET,
  fileAccess,
  formatSize,
  isFileField,
  parentOf,
  percent,
  rootLabel,
  withFileFields,
} from '../../src/lib/files';
import { importKeyPair, openRequest } from '../../src/e2e/index';
import { fileRefusalSentence, sentenceFor, withoutStack } from '../../src/lib/errors';
import { RelayClient, RemoteError, UPLOAD_CHUNK_BYTES } from '../../src/tunnel/client';
import { decodeEnvelope, decodeOpenHeader, encodeEnvelope, encodeFrame, fromHex } from '../../src/tunnel/codec';
import { FakeTransport, fakeClient, until } from './fake-relay';
import vectors from '../../../crypto/vectors/e2e-vectors.json';

function access(client: ReturnType<typeof fakeClient>['client']) {
  return fileAccess({
    client: async () => client,
    deviceId: 'dev-1',
    token: async () => 'jwt',
    e2e: async () => null,
    appId: 'file-qa',
    appName: 'File Q&A',
  });
}

describe('file requests', () => {
  it('lists a folder on a Control stream', async () => {
    const { transport, client } = fakeClient();
    const page = access(client).list('$DOCUMENTS', 100);
    await until(() => transport.streams[0]?.frames.length === 2, 'header + FILES_LIST');
    const far = transport.streams[0]!;
    expect(far.header()).toMatchObject({ deviceId: 'dev-1', kind: 'Control' });
    expect(far.envelopes().map((e) => e.body)).toEqual([
      { type: 'FilesList', appId: 'file-qa', path: '$DOCUMENTS', offset: 100, limit: 100 },
    ]);
    const entries = [{ name: 'a.md', path: '$DOCUMENTS/a.md', dir: false, size: 3 }];
    far.send({ type: 'FilesPage', path: '$DOCUMENTS', total: 101, entries });
    far.finish();
    await expect(page).resolves.toEqual({ path: '$DOCUMENTS', total: 101, entries });
  });

  it('uploads in chunks, reports progress, and answers the stored path', async () => {
    const { transport, client } = fakeClient();
    const content = Uint8Array.from({ length: 150_000 }, (_, i) => i % 251);
    const file = new File([content], 'notes.txt');
    const progress: number[] = [];
    const stored = access(client).upload(file, (r) => progress.push(r), new AbortController().signal);
    // header + FILE_UPLOAD + 3 chunks (64 KiB, 64 KiB, the rest)
    await until(() => transport.streams[0]?.frames.length === 5, 'the whole file');
    const far = transport.streams[0]!;
    const [upload, ...chunks] = far.envelopes().map((e) => e.body);
    expect(upload).toEqual({ type: 'FileUpload', appId: 'file-qa', name: 'notes.txt', size: 150_000 });
    const sent = chunks.map((c) => (c.type === 'FileChunk' ? c.data : new Uint8Array()));
    expect(sent.map((c) => c.length)).toEqual([UPLOAD_CHUNK_BYTES, UPLOAD_CHUNK_BYTES, 150_000 - 2 * UPLOAD_CHUNK_BYTES]);
    const joined = new Uint8Array(150_000);
    sent.reduce((at, c) => (joined.set(c, at), at + c.length), 0);
    expect(joined).toEqual(content);
    far.send({ type: 'FileProgress', received: 131_072 });
    far.send({ type: 'FileStored', path: '$APP_DATA/uploads/notes.txt', size: 150_000 });
    far.finish();
    await expect(stored).resolves.toEqual({ path: '$APP_DATA/uploads/notes.txt', size: 150_000 });
    expect(progress).toEqual([131_072, 150_000]);
  });

  it('reports the desktop refusal and a cancel', async () => {
    const a = fakeClient();
    const big = access(a.client).upload(new File([new Uint8Array(10)], 'big.bin'), () => {}, new AbortController().signal);
    await until(() => a.transport.streams.length === 1);
    const message = 'The file is 10 bytes; this desktop accepts uploads of up to 5 bytes (max_upload_bytes under [files] in its node.toml).';
    a.transport.streams[0]!.send({ type: 'Error', code: 'limit_exceeded', message });
    await expect(big).rejects.toSatisfy((e) => e instanceof RemoteError && e.code === 'limit_exceeded' && e.message === message);

    const b = fakeClient();
    const abort = new AbortController();
    const cancelled = access(b.client).upload(new File([new Uint8Array(200_000)], 'x.bin'), () => {}, abort.signal);
    await until(() => (b.transport.streams[0]?.frames.length ?? 0) >= 3, 'a chunk');
    abort.abort();
    await until(() => b.transport.streams[0]!.envelopes().some((e) => e.body.type === 'Cancel'), 'CANCEL');
    b.transport.streams[0]!.send({ type: 'Error', code: 'cancelled', message: 'The upload was cancelled; nothing was kept.' });
    await expect(cancelled).rejects.toSatisfy((e) => e instanceof DOMException && e.name === 'AbortError');
    // Nothing was sent after the CANCEL.
    const bodies = b.transport.streams[0]!.envelopes().map((e) => e.body.type);
    expect(bodies.at(-1)).toBe('Cancel');
  });
});

describe('a sealed upload (a paired device)', () => {
  it('seals FILE_UPLOAD and every FILE_CHUNK: the relay sees neither name nor bytes', async () => {
    const [desktopSk, browserSk, desktopPk, browserPk] = [vectors.desktop_sk, vectors.browser_sk, vectors.desktop_pk, vectors.browser_pk].map(fromHex) as [
      Uint8Array,
      Uint8Array,
      Uint8Array,
      Uint8Array,
    ];
    const transport = new FakeTransport();
    const client = RelayClient.fromTransport(transport);
    const browserKey = await importKeyPair(browserSk, browserPk);
    const secret = 'top secret bytes '.repeat(5000); // 85,000 bytes: two chunks
    const stored = client.uploadFile({
      deviceId: 'dev-1',
      token: 't',
      appId: 'file-qa',
      file: new File([secret], 'plans.txt'),
      name: 'plans.txt',
      e2e: { desktopPk, browserKey, browserPk },
    });
    await until(() => (transport.streams[0]?.frames.length ?? 0) >= 4, 'header, request and two chunks');
    const far = transport.streams[0]!;
    const wire = new TextDecoder('latin1').decode(new Uint8Array(far.frames.flatMap((f) => [...f])));
    expect(wire).not.toContain('plans.txt');
    expect(wire).not.toContain('top secret');
    const header = decodeOpenHeader(far.frames[0]!);
    expect(header.kind).toBe('Control');
    const desktop = await importKeyPair(desktopSk, desktopPk);
    const { request, sealer, controls } = await openRequest(
      desktop,
      browserPk,
      new TextEncoder().encode('dev-1'),
      new Uint8Array([...header.e2e!.slice(9), ...far.frames[1]!]),
    );
    const env = decodeEnvelope(request);
    expect(env.body).toEqual({ type: 'FileUpload', appId: 'file-qa', name: 'plans.txt', size: 85_000 });
    const chunks = [];
    for (const frame of far.frames.slice(2)) chunks.push(decodeEnvelope(await controls.open(frame)).body);
    expect(chunks.map((c) => (c.type === 'FileChunk' ? c.data.length : -1))).toEqual([UPLOAD_CHUNK_BYTES, 85_000 - UPLOAD_CHUNK_BYTES]);
    const answer = { type: 'FileStored' as const, path: '$APP_DATA/uploads/plans.txt', size: 85_000 };
    far.sendRaw(encodeFrame(await sealer.sealChunk(encodeEnvelope({ requestId: env.requestId, deviceId: '', body: answer }), true)));
    far.finish();
    await expect(stored).resolves.toEqual({ path: answer.path, size: 85_000 });
  });
});

describe('file fields', () => {
  it('are what the author marks, or strings named like paths', () => {
    expect(isFileField('path', { type: 'string' }, undefined)).toBe(true);
    expect(isFileField('report_path', { type: 'string' }, undefined)).toBe(true);
    expect(isFileField('sourcePath', { type: 'string' }, undefined)).toBe(true);
    expect(isFileField('doc', { type: 'string', format: 'file-path' }, undefined)).toBe(true);
    expect(isFileField('doc', { type: 'string' }, { 'ui:widget': 'file-path' })).toBe(true);
    // Not: other names, other types, enums, or another widget the author chose.
    expect(isFileField('topic', { type: 'string' }, undefined)).toBe(false);
    expect(isFileField('path', { type: 'number' }, undefined)).toBe(false);
    expect(isFileField('path', { type: 'string', enum: ['a'] }, undefined)).toBe(false);
    expect(isFileField('path', { type: 'string' }, { 'ui:widget': 'textarea' })).toBe(false);

    const ui = withFileFields(
      { type: 'object', properties: { path: { type: 'string' }, question: { type: 'string' } } },
      { path: { 'ui:placeholder': '$DOCUMENTS/a.md' } },
    );
    expect(ui).toEqual({ path: { 'ui:placeholder': '$DOCUMENTS/a.md', 'ui:widget': FILE_WIDGET } });
  });

  it('say sizes, folders and progress in words', () => {
    expect(formatSize(1)).toBe('1 byte');
    expect(formatSize(812)).toBe('812 bytes');
    expect(formatSize(1536)).toBe('1.5 KB');
    expect(formatSize(3_355_443)).toBe('3.2 MB');
    expect(rootLabel('$DOCUMENTS')).toBe('Documents');
    expect(rootLabel('$APP_DATA')).toBe('This app’s own files');
    expect(rootLabel('/srv/shared')).toBe('/srv/shared');
    const roots = ['$APP_DATA', '$DOCUMENTS'];
    expect(parentOf('$DOCUMENTS/notes/a', roots)).toBe('$DOCUMENTS/notes');
    expect(parentOf('$DOCUMENTS/notes', roots)).toBe('$DOCUMENTS');
    expect(parentOf('$DOCUMENTS', roots)).toBe('');
    expect(percent(50, 200)).toBe(25);
    expect(percent(0, 0)).toBe(100);
  });
});

describe('file refusals in words', () => {
  it('an app refused a file reads as a sentence, without stack positions', () => {
    const js =
      'Error: fs.read: permission_denied: reading /home/ada/secret.csv is refused: it is not granted\n' +
      '    at readFile (tools.js:12:9)\n    at ask (bot-logic.js:9:42)\n';
    const sentence = fileRefusalSentence(js);
    expect(sentence).toBe(
      'Your desktop refused the app a file (reading /home/ada/secret.csv is refused: it is not granted). Apps may open only the folders you granted them.',
    );
    expect(sentenceFor('app_failed', js)).toBe(sentence);
    expect(sentenceFor('app_failed', 'cannot read $DOCUMENTS/x.csv: not_found: /home/ada/Documents/x.csv does not exist')).toBe(
      'The app could not find a file on your desktop (/home/ada/Documents/x.csv does not exist).',
    );
    expect(sentenceFor('app_failed', 'fs.read: invalid: "notes" is neither absolute nor starts with ~, $HOME, $DOCUMENTS, $DOWNLOADS, $DESKTOP or $APP_DATA')).toMatch(
      /^The app was given a path your desktop does not understand/,
    );
    // Other failures keep the general sentence.
    expect(sentenceFor('app_failed', 'invalid: content is not JSON')).toBe('The app failed while running on your desktop.');
    expect(withoutStack('Error: boom\n    at f (a.js:1:2)')).toBe('Error: boom');
  });
});
