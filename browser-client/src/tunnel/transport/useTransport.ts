/**
 * The page's current relay transport as React state, for the header's indicator.
 */

import { useSyncExternalStore } from 'react';

import { currentTransport, type TransportKind } from './index';

function subscribe(onChange: () => void): () => void {
  currentTransport.addEventListener('change', onChange);
  return () => currentTransport.removeEventListener('change', onChange);
}

/** `webtransport`, `websocket`, or `null` when no session is open. */
export function useTransportKind(): TransportKind | null {
  return useSyncExternalStore(subscribe, () => currentTransport.kind);
}

/** Short words for the indicator, and a longer explanation for its title. */
export function transportLabel(kind: TransportKind): { text: string; title: string } {
  return kind === 'webtransport'
    ? { text: 'QUIC', title: 'Connected over WebTransport (QUIC)' }
    : {
        text: 'TCP',
        title: 'Connected over a WebSocket (TCP): WebTransport is not available on this browser or network',
      };
}
