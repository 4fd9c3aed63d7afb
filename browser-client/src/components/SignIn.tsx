/** Sign in, or create an account, with email and password. */

import { useRef, useState, type FormEvent } from 'react';
import { MIN_NEW_PASSWORD, type Api } from '../lib/api';
import { describeError } from '../lib/errors';

export function SignIn({ api }: { api: Api }) {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const emailRef = useRef<HTMLInputElement>(null);
  const passwordRef = useRef<HTMLInputElement>(null);

  async function submit(how: 'login' | 'signup'): Promise<void> {
    if (busy) return;
    const address = email.trim();
    if (!address || !password) {
      setError('Enter your email and password.');
      (address ? passwordRef : emailRef).current?.focus();
      return;
    }
    if (how === 'signup' && password.length < MIN_NEW_PASSWORD) {
      setError(`A new account needs a password of at least ${MIN_NEW_PASSWORD} characters.`);
      passwordRef.current?.focus();
      return;
    }
    setError('');
    setBusy(true);
    try {
      await api.signIn(how, address, password);
    } catch (err) {
      setBusy(false);
      setError(describeError(err).message);
      passwordRef.current?.focus();
    }
  }

  const onSubmit = (e: FormEvent): void => {
    e.preventDefault();
    void submit('login');
  };

  return (
    <main id="main" className="signin">
      <section aria-labelledby="signin-title" className="card">
        <h2 id="signin-title">Sign in or create an account</h2>
        <form onSubmit={onSubmit} noValidate>
          <div className="field">
            <label htmlFor="email">Email</label>
            <input
              id="email"
              ref={emailRef}
              type="email"
              autoComplete="username"
              required
              autoFocus
              value={email}
              onChange={(e) => setEmail(e.target.value)}
            />
          </div>
          <div className="field">
            <label htmlFor="password">Password</label>
            <input
              id="password"
              ref={passwordRef}
              type="password"
              autoComplete="current-password"
              aria-describedby="password-hint"
              required
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
            <span id="password-hint" className="muted hint">
              A new account needs at least {MIN_NEW_PASSWORD} characters.
            </span>
          </div>
          <div className="row">
            <button type="submit" disabled={busy}>
              Sign in
            </button>
            <button type="button" className="secondary" disabled={busy} onClick={() => void submit('signup')}>
              Create account
            </button>
          </div>
          <p id="signin-error" className="error" role="alert">
            {error}
          </p>
        </form>
      </section>
    </main>
  );
}
