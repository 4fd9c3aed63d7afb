/** What every screen of the signed-in app can reach. */

import { createContext, useContext } from 'react';
import type { Account, Api, Device } from '../lib/api';
import type { RunStore } from '../lib/runs';
import type { RelaySession } from '../lib/session';

/** The signed-in app's shared state, provided by the shell. */
export interface AppContextValue {
  api: Api;
  session: RelaySession;
  /** The user's devices, with online state kept live by the device-status stream. */
  devices: Device[];
  /** True until the first device list arrived. */
  devicesLoading: boolean;
  /** Why the device list could not be loaded, or ''. */
  devicesError: string;
  /** The device the user works with (the first online one by default), or null. */
  device: Device | null;
  selectDevice: (id: string) => void;
  reloadDevices: () => void;
  account: Account | null;
  reloadAccount: () => void;
  /** The page's action runs: they go on while the person is on another screen. */
  runs: RunStore;
  /** App names from the marketplace, by id (an app not listed there keeps its id). */
  appNames: Record<string, string>;
}

export const AppContext = createContext<AppContextValue | null>(null);

/** The shared state; only inside the shell. */
export function useApp(): AppContextValue {
  const value = useContext(AppContext);
  if (!value) throw new Error('useApp outside the app shell');
  return value;
}
