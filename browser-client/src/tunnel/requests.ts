/**
 * The browser's one-shot requests to a desktop, built on {@link RelayClient.request}:
 * GET_STATUS (which apps are installed) and INSTALL_APP (a request that the person
 * approves on the desktop, with progress reported as it goes).
 */

import type { AppStatus, ProviderStatus, UnloadableApp } from './codec';
import { RelayClient, TransportError, type E2eKeys } from './client';

/** A device's answer to GET_STATUS. */
export interface DeviceState {
  online: boolean;
  nodeVersion: string;
  /** The installed mini-apps, sorted by id. */
  apps: AppStatus[];
  /** The AI providers and models it is set up to use (protocol 1.2; empty from an older desktop). */
  providers: ProviderStatus[];
  /** Installed apps it cannot run, each with why (protocol 1.2). */
  unloadable: UnloadableApp[];
}

/** Asks a device for its state (its installed apps) with GET_STATUS; sealed end to end
 * with `e2e` (the keys of a paired device). */
export async function getDeviceState(
  client: RelayClient,
  req: { deviceId: string; token: string; signal?: AbortSignal; e2e?: E2eKeys },
): Promise<DeviceState> {
  // Read to the final message (the request machine ends the stream there), so that the
  // stream closes cleanly rather than being reset.
  let state: DeviceState | null = null;
  for await (const env of client.request({ ...req, body: { type: 'GetStatus' } })) {
    if (env.body.type !== 'DeviceStatus' || state) {
      throw new TransportError('unexpected_message', `unexpected ${env.body.type} answer to GET_STATUS`);
    }
    const { online, nodeVersion, apps, providers = [], unloadable = [] } = env.body;
    state = { online, nodeVersion, apps, providers, unloadable };
  }
  if (!state) throw new TransportError('stream_ended', 'the device finished the stream without a DEVICE_STATUS');
  return state;
}

/**
 * How an install is going, as the desktop reports it in each STREAM_CHUNK of an
 * INSTALL_APP stream (its `data` is this object as JSON). States this page does not know
 * are kept with their name.
 */
export type InstallProgress =
  | { state: 'pending_approval' }
  | { state: 'downloading'; percent: number | null }
  | { state: 'installing' }
  | { state: 'installed'; version: string }
  | { state: 'other'; name: string };

/** Reads one STREAM_CHUNK of an INSTALL_APP stream. Throws on data that is not a JSON object with a `state`. */
export function parseInstallProgress(data: string): InstallProgress {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    throw new TransportError('malformed_frame', `install progress is not JSON: ${data.slice(0, 100)}`);
  }
  if (!value || typeof value !== 'object' || typeof (value as { state?: unknown }).state !== 'string') {
    throw new TransportError('malformed_frame', `install progress has no state: ${data.slice(0, 100)}`);
  }
  const v = value as { state: string; percent?: unknown; version?: unknown };
  switch (v.state) {
    case 'pending_approval':
      return { state: 'pending_approval' };
    case 'downloading':
      return {
        state: 'downloading',
        percent: typeof v.percent === 'number' && Number.isFinite(v.percent) ? Math.max(0, Math.min(100, v.percent)) : null,
      };
    case 'installing':
      return { state: 'installing' };
    case 'installed':
      return { state: 'installed', version: typeof v.version === 'string' ? v.version : '' };
    default:
      return { state: 'other', name: v.state };
  }
}

/**
 * Asks a device to install an app (`version` null: the latest) and reports its progress
 * until the desktop ends the stream. Resolves with the installed version; rejects with a
 * `RemoteError` (code `denied` when the person refused on the desktop), a
 * `TransportError`, or an `AbortError` when `signal` aborts (which only stops this page
 * from waiting: the request stays on the desktop until the person decides).
 */
export async function installApp(
  client: RelayClient,
  req: {
    deviceId: string;
    token: string;
    appId: string;
    version: string | null;
    onProgress: (p: InstallProgress) => void;
    signal?: AbortSignal;
    /** Seal the request end to end (the keys of a paired device). */
    e2e?: E2eKeys;
  },
): Promise<string> {
  let installed: string | null = null;
  let ended = false;
  for await (const env of client.request({
    deviceId: req.deviceId,
    token: req.token,
    signal: req.signal,
    body: { type: 'InstallApp', appId: req.appId, version: req.version },
    ...(req.e2e ? { e2e: req.e2e } : {}),
  })) {
    // The request machine reports nothing after the final message (STREAM_END here).
    const b = env.body;
    if (b.type === 'StreamChunk') {
      const progress = parseInstallProgress(b.data);
      if (progress.state === 'installed') installed = progress.version;
      req.onProgress(progress);
    } else if (b.type === 'StreamEnd') {
      ended = true;
    } else {
      throw new TransportError('unexpected_message', `unexpected ${b.type} message on an install stream`);
    }
  }
  if (!ended) {
    throw new TransportError('stream_ended', 'the device finished the install stream without STREAM_END');
  }
  return installed ?? req.version ?? '';
}
