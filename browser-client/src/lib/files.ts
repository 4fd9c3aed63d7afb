/**
 * Files for a form's file fields (docs/protocol.md, "Files", protocol 1.2): which fields
 * are file paths, browsing the folders the app was granted on the desktop (FILES_LIST,
 * each page on its own Control stream), and uploading a file into the app's data folder
 * there (FILE_UPLOAD with a progress bar). Both are sealed end to end for a paired
 * device. Nothing is kept in the browser.
 */

import type { RJSFSchema, UiSchema } from '@rjsf/utils';
import type { FileEntry } from '../tunnel/codec';
import { RelayClient, TransportError, type E2eKeys } from '../tunnel/client';

export type { FileEntry } from '../tunnel/codec';

/** The rjsf widget name of a file field. */
export const FILE_WIDGET = 'filePath';

/** How many entries one page of a folder holds. */
export const FILES_PAGE_SIZE = 100;

/** A page of a folder: how many entries it has in all, and these. */
export interface FolderPage {
  /** The folder, as the app writes it ('' for the granted folders). */
  path: string;
  total: number;
  entries: FileEntry[];
}

/** What a file field can do with the desktop (the runner gives it; absent: typing only). */
export interface FileAccess {
  /** One page of `path` ('' for the folders the app was granted). */
  list(path: string, offset: number): Promise<FolderPage>;
  /** Uploads `file` into the app's data folder; resolves with the path a form submits. */
  upload(file: File, onProgress: (received: number, size: number) => void, signal: AbortSignal): Promise<{ path: string; size: number }>;
  /** The app's name, for the picker's words. */
  readonly appName: string;
}

/** Where file requests go. */
export interface FilesTarget {
  client: () => Promise<RelayClient>;
  deviceId: string;
  token: () => Promise<string>;
  /** The keys of a paired device, or null. */
  e2e: () => Promise<E2eKeys | null>;
  appId: string;
  appName: string;
}

/** The {@link FileAccess} of one app on one device. */
export function fileAccess(target: FilesTarget): FileAccess {
  return {
    appName: target.appName,
    async list(path, offset) {
      const client = await target.client();
      const e2e = await target.e2e();
      let page: FolderPage | null = null;
      for await (const env of client.request({
        deviceId: target.deviceId,
        token: await target.token(),
        body: { type: 'FilesList', appId: target.appId, path, offset, limit: FILES_PAGE_SIZE },
        ...(e2e ? { e2e } : {}),
      })) {
        if (env.body.type !== 'FilesPage' || page) {
          throw new TransportError('unexpected_message', `unexpected ${env.body.type} answer to FILES_LIST`);
        }
        page = { path: env.body.path, total: env.body.total, entries: env.body.entries };
      }
      if (!page) throw new TransportError('stream_ended', 'the device finished the stream without a FILES_PAGE');
      return page;
    },
    async upload(file, onProgress, signal) {
      const client = await target.client();
      const e2e = await target.e2e();
      return client.uploadFile({
        deviceId: target.deviceId,
        token: await target.token(),
        appId: target.appId,
        file,
        name: file.name,
        onProgress,
        signal,
        ...(e2e ? { e2e } : {}),
      });
    },
  };
}

const FILE_NAMES = new Set(['path', 'file', 'filepath', 'file_path', 'filename', 'file_name', 'document']);

/**
 * Whether a schema property is a file path on the desktop: the author says so
 * (`"ui:widget": "file-path"` or `"filePath"` in the uiSchema, or `"format": "file-path"`),
 * or it is a string named like one (`path`, `file`, `…_path`, `…Path`) and the author chose
 * no other widget.
 */
export function isFileField(name: string, prop: unknown, ui: UiSchema | undefined): boolean {
  const widget = ui?.['ui:widget'];
  if (widget === 'file-path' || widget === FILE_WIDGET) return true;
  if (!prop || typeof prop !== 'object') return false;
  const p = prop as { type?: unknown; format?: unknown; enum?: unknown };
  if (p.type !== 'string' || p.enum) return false;
  if (p.format === 'file-path') return true;
  if (widget !== undefined) return false;
  const n = name.toLowerCase();
  return FILE_NAMES.has(n) || n.endsWith('_path') || /[a-z]Path$/.test(name);
}

/** The uiSchema with the file picker on every file field of an object schema. */
export function withFileFields(schema: RJSFSchema, uiSchema: UiSchema): UiSchema {
  if (schema.type !== 'object' || !schema.properties) return uiSchema;
  const out: UiSchema = { ...uiSchema };
  for (const [name, prop] of Object.entries(schema.properties)) {
    const ui = (uiSchema[name] ?? undefined) as UiSchema | undefined;
    if (isFileField(name, prop, ui)) out[name] = { ...(ui ?? {}), 'ui:widget': FILE_WIDGET };
  }
  return out;
}

/** "$DOCUMENTS" → "Documents", "$APP_DATA" → "This app’s own files"; other grants as written. */
export function rootLabel(name: string): string {
  const known: Record<string, string> = {
    $APP_DATA: 'This app’s own files',
    $DOCUMENTS: 'Documents',
    $DOWNLOADS: 'Downloads',
    $DESKTOP: 'Desktop',
    $HOME: 'Home folder',
  };
  return known[name] ?? name;
}

/** The folder above `path` ('' above a granted folder, which `roots` lists). */
export function parentOf(path: string, roots: readonly string[]): string {
  if (roots.includes(path)) return '';
  const cut = path.replace(/\/+$/, '').lastIndexOf('/');
  return cut > 0 ? path.slice(0, cut) : '';
}

/** "812 bytes", "1.5 KB", "3.2 MB". */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} byte${bytes === 1 ? '' : 's'}`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** 0–100, for the progress bar. */
export function percent(received: number, size: number): number {
  if (size <= 0) return 100;
  return Math.max(0, Math.min(100, Math.round((received / size) * 100)));
}
