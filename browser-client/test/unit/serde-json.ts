/**
 * Rust values as serde writes them in JSON (the shapes of the vector files the tunnel
 * crate's tests write) → the TypeScript codec's shapes.
 */

import type {
  AppStatus,
  Body,
  Envelope,
  FileEntry,
  OpenHeader,
  ProviderStatus,
  RunRecord,
  StreamKind,
  UnloadableApp,
} from '../../src/tunnel/codec';

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A JSON object. */
export type JsonObject = { [key: string]: Json };

/** `v` as an object, or throws naming `what`. */
export function obj(v: Json | undefined, what: string): JsonObject {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${what}: not an object`);
  return v;
}
/** Field `k` of `o`, a string. */
export function str(o: JsonObject, k: string): string {
  const v = o[k];
  if (typeof v !== 'string') throw new Error(`field ${k}: not a string`);
  return v;
}
/** Field `k` of `o`, a number. */
export function num(o: JsonObject, k: string): number {
  const v = o[k];
  if (typeof v !== 'number') throw new Error(`field ${k}: not a number`);
  return v;
}
/** Field `k` of `o`, a bool. */
export function bool(o: JsonObject, k: string): boolean {
  const v = o[k];
  if (typeof v !== 'boolean') throw new Error(`field ${k}: not a bool`);
  return v;
}
/** A `Vec<u8>` (serde writes an array of numbers). */
export function bytes(v: Json | undefined): Uint8Array {
  if (!Array.isArray(v)) throw new Error('not a byte array');
  return Uint8Array.from(v as number[]);
}
/** An `Option<Vec<u8>>`. */
export function optBytes(v: Json | undefined): Uint8Array | null {
  return v === null ? null : bytes(v);
}
/** A `StreamKind`. */
export function kind(v: Json | undefined): StreamKind {
  if (v !== 'Action' && v !== 'Control') throw new Error(`bad StreamKind ${JSON.stringify(v)}`);
  return v;
}

/** A `Body` (unit variants as strings, others as `{ Variant: { fields } }`). */
/** DEVICE_STATUS's 1.2 lists, left out when empty (as the codec decodes them). */
function deviceDetails(f: JsonObject): { providers?: ProviderStatus[]; unloadable?: UnloadableApp[] } {
  const list = (k: string): Json[] => {
    const v = f[k];
    if (!Array.isArray(v)) throw new Error(`${k}: not an array`);
    return v;
  };
  const providers = list('providers').map((p): ProviderStatus => {
    const o = obj(p, 'provider');
    const models = o['models'];
    if (!Array.isArray(models)) throw new Error('models: not an array');
    return { name: str(o, 'name'), models: models.map((m) => String(m)), configured: bool(o, 'configured') };
  });
  const unloadable = list('unloadable').map((u): UnloadableApp => {
    const o = obj(u, 'unloadable app');
    return { id: str(o, 'id'), version: str(o, 'version'), reason: str(o, 'reason') };
  });
  return { ...(providers.length ? { providers } : {}), ...(unloadable.length ? { unloadable } : {}) };
}

export function toBody(v: Json | undefined): Body {
  if (v === 'GetStatus' || v === 'Cancel') return { type: v };
  const outer = obj(v, 'body');
  const [tag, ...rest] = Object.keys(outer);
  if (tag === undefined || rest.length) throw new Error('body: expected one variant');
  const f = obj(outer[tag], tag);
  switch (tag) {
    case 'ExecuteAction':
      return {
        type: tag,
        appId: str(f, 'app_id'),
        action: str(f, 'action'),
        payload: str(f, 'payload'),
        ...(f['model'] === null || f['model'] === undefined ? {} : { model: str(f, 'model') }),
      };
    case 'InstallApp':
      return { type: tag, appId: str(f, 'app_id'), version: f['version'] === null ? null : str(f, 'version') };
    case 'UninstallApp':
      return { type: tag, appId: str(f, 'app_id') };
    case 'StreamChunk':
      return { type: tag, seq: num(f, 'seq'), data: str(f, 'data') };
    case 'StreamEnd':
      return { type: tag, chunks: num(f, 'chunks'), elapsedMs: num(f, 'elapsed_ms') };
    case 'Error':
      return { type: tag, code: str(f, 'code'), message: str(f, 'message') };
    case 'DeviceStatus': {
      const apps = f['apps'];
      if (!Array.isArray(apps)) throw new Error('apps: not an array');
      return {
        type: tag,
        online: bool(f, 'online'),
        nodeVersion: str(f, 'node_version'),
        apps: apps.map((a): AppStatus => {
          const o = obj(a, 'app');
          return { id: str(o, 'id'), version: str(o, 'version'), enabled: bool(o, 'enabled') };
        }),
        ...deviceDetails(f),
      };
    }
    case 'Ping':
    case 'Pong':
      return { type: tag, nonce: num(f, 'nonce') };
    case 'Welcome': {
      const version = obj(f['version'], 'version');
      return {
        type: tag,
        deviceId: str(f, 'device_id'),
        version: { major: num(version, 'major'), minor: num(version, 'minor') },
        heartbeatSecs: num(f, 'heartbeat_secs'),
      };
    }
    case 'StatusSnapshotEnd':
      return { type: tag, devices: num(f, 'devices') };
    case 'HistoryList':
      return { type: tag, query: str(f, 'query'), offset: num(f, 'offset'), limit: num(f, 'limit') };
    case 'HistoryGet':
      return { type: tag, runId: num(f, 'run_id') };
    case 'HistoryDelete':
      return { type: tag, runId: f['run_id'] === null ? null : num(f, 'run_id') };
    case 'HistoryPage': {
      const runs = f['runs'];
      if (!Array.isArray(runs)) throw new Error('runs: not an array');
      return { type: tag, total: num(f, 'total'), runs: runs.map((r) => toRun(r)) };
    }
    case 'HistoryRun':
      return { type: tag, run: toRun(f['run']) };
    case 'HistoryDeleted':
      return { type: tag, count: num(f, 'count') };
    case 'FilesList':
      return { type: tag, appId: str(f, 'app_id'), path: str(f, 'path'), offset: num(f, 'offset'), limit: num(f, 'limit') };
    case 'FilesPage': {
      const entries = f['entries'];
      if (!Array.isArray(entries)) throw new Error('entries: not an array');
      return {
        type: tag,
        path: str(f, 'path'),
        total: num(f, 'total'),
        entries: entries.map((e): FileEntry => {
          const o = obj(e, 'entry');
          return { name: str(o, 'name'), path: str(o, 'path'), dir: bool(o, 'dir'), size: num(o, 'size') };
        }),
      };
    }
    case 'FileUpload':
      return { type: tag, appId: str(f, 'app_id'), name: str(f, 'name'), size: num(f, 'size') };
    case 'FileChunk':
      return { type: tag, data: bytes(f['data']) };
    case 'FileProgress':
      return { type: tag, received: num(f, 'received') };
    case 'FileStored':
      return { type: tag, path: str(f, 'path'), size: num(f, 'size') };
    default:
      throw new Error(`unknown body variant ${tag}`);
  }
}

/** A `RunRecord` as serde writes it. */
function toRun(v: Json | undefined): RunRecord {
  const o = obj(v, 'run');
  return {
    id: num(o, 'id'),
    appId: str(o, 'app_id'),
    appName: str(o, 'app_name'),
    action: str(o, 'action'),
    input: str(o, 'input'),
    output: str(o, 'output'),
    startedMs: num(o, 'started_ms'),
    durationMs: num(o, 'duration_ms'),
    status: str(o, 'status'),
    errorCode: str(o, 'error_code'),
    errorMessage: str(o, 'error_message'),
    capped: bool(o, 'capped'),
    preview: bool(o, 'preview'),
  };
}

/** An `Envelope` as serde writes it. */
export function toEnvelope(v: Json | undefined): Envelope {
  const o = obj(v, 'envelope');
  return { requestId: num(o, 'request_id'), deviceId: str(o, 'device_id'), body: toBody(o['body']) };
}

/** An `OpenHeader` as serde writes it. */
export function toOpenHeader(v: Json | undefined): OpenHeader {
  const o = obj(v, 'open header');
  return { deviceId: str(o, 'device_id'), kind: kind(o['kind']), token: str(o, 'token'), e2e: optBytes(o['e2e']) };
}
