/** The page: the sign-in screen, or the signed-in app shell. */

import { useEffect, useState } from 'react';
import type { Api } from './lib/api';
import { Shell } from './components/Shell';
import { SignIn } from './components/SignIn';

export function App({ api }: { api: Api }) {
  const [user, setUser] = useState(api.user);
  useEffect(() => api.subscribe(() => setUser(api.user)), [api]);
  // A new key per signed-in user: nothing of one user's screens survives into the next.
  return user ? <Shell key={user.userId + user.email} api={api} /> : <SignIn api={api} />;
}
