/**
 * The page: while the refresh cookie is tried (a reload, a new tab, a deep link), a
 * short "Signing you in…"; then the sign-in screen, or the signed-in app shell on the
 * screen the URL names.
 */

import { useEffect, useState } from 'react';
import type { Api } from './lib/api';
import { Shell } from './components/Shell';
import { SignIn } from './components/SignIn';

export function App({ api }: { api: Api }) {
  const [user, setUser] = useState(api.user);
  const [restored, setRestored] = useState(api.restored);
  useEffect(
    () =>
      api.subscribe(() => {
        setUser(api.user);
        setRestored(api.restored);
      }),
    [api],
  );
  useEffect(() => {
    if (!api.restored) void api.restore();
  }, [api]);
  if (!user && !restored) {
    return (
      <main id="main" className="signin">
        <p role="status" className="muted">
          Signing you in…
        </p>
      </main>
    );
  }
  // A new key per signed-in user: nothing of one user's screens survives into the next.
  return user ? <Shell key={user.userId + user.email} api={api} /> : <SignIn api={api} />;
}
