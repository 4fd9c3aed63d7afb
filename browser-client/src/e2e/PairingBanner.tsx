/**
 * Finishes a pairing when the page was opened with `desktop-node pair`'s link
 * (`#pair=…`, docs/e2e.md): pairs this browser with that desktop through the relay, then
 * shows the desktop key's fingerprint to compare with what the desktop printed.
 */

import { useEffect, useState } from 'react';

import { useApp } from '../components/context';
import { describeError } from '../lib/errors';
import { indexedDbKeyStore, type KeyStore } from './keystore';
import { completePairing } from './session';
import { parsePairingLink } from './stream';

type State =
  | { kind: 'none' }
  | { kind: 'pairing' }
  | { kind: 'paired'; fingerprint: string }
  | { kind: 'failed'; message: string };

/** `keys`: where the browser's key is kept (IndexedDB unless a test gives another). */
export function PairingBanner({ keys }: { keys?: KeyStore }) {
  const { api, session, reloadDevices } = useApp();
  const [state, setState] = useState<State>(() =>
    parsePairingLink(window.location.href) ? { kind: 'pairing' } : { kind: 'none' },
  );
  const [attempt, setAttempt] = useState(0);
  // A link opened in a tab that already shows the app only changes the fragment.
  useEffect(() => {
    const onHash = (): void => {
      if (parsePairingLink(window.location.href)) setAttempt((n) => n + 1);
    };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    const href = window.location.href;
    if (!parsePairingLink(href)) return;
    let stale = false;
    setState({ kind: 'pairing' });
    void (async () => {
      try {
        const client = await session.client();
        const done = await completePairing(
          client,
          await api.accessToken(),
          href,
          navigator.userAgent.slice(0, 64),
          keys ?? indexedDbKeyStore(),
        );
        if (stale || !done) return;
        // The secret is spent: drop it from the address bar and the history entry.
        window.history.replaceState(null, '', window.location.pathname + '#/');
        setState({ kind: 'paired', fingerprint: done.fingerprint });
        reloadDevices();
      } catch (err) {
        if (!stale) setState({ kind: 'failed', message: describeError(err).message });
      }
    })();
    return () => {
      stale = true;
    };
  }, [api, session, reloadDevices, attempt, keys]);

  switch (state.kind) {
    case 'none':
      return null;
    case 'pairing':
      return <p role="status">Pairing this browser with your desktop…</p>;
    case 'paired':
      return (
        <p role="status" className="card">
          Paired: actions on that desktop are now end-to-end encrypted. Check that the desktop printed the same key
          fingerprint: <code>{state.fingerprint}</code>
        </p>
      );
    case 'failed':
      return (
        <div role="alert" className="card error">
          <p>Could not pair with the desktop: {state.message}</p>
          <button type="button" className="secondary" onClick={() => setAttempt((n) => n + 1)}>
            Try again
          </button>
        </div>
      );
  }
}
