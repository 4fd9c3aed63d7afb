/**
 * The first page: what this is, in a few lines, and sign in or create an account with
 * email and password, or with one of the identity providers the relay offers (a button
 * each). A new account goes on to "Add a desktop". A provider sign-in that came back
 * refused (`?oidc_error=…`) shows its sentence here.
 */

import { useEffect, useRef, useState, type FormEvent } from 'react';
import { MIN_NEW_PASSWORD, type Api } from '../lib/api';
import { humanError, type HumanError } from '../lib/errors';
import { fetchOidcProviders, oidcErrorSentence, takeOidcError, type OidcProvider } from '../lib/oidc';

export function SignIn({ api }: { api: Api }) {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [details, setDetails] = useState<HumanError | null>(null);
  const [busy, setBusy] = useState(false);
  const emailRef = useRef<HTMLInputElement>(null);
  const passwordRef = useRef<HTMLInputElement>(null);
  const [providers, setProviders] = useState<OidcProvider[]>([]);
  const [providerError] = useState(() =>
    takeOidcError(window.location, (url) => window.history.replaceState(null, '', url)),
  );

  useEffect(() => {
    let live = true;
    void fetchOidcProviders().then((list) => live && setProviders(list));
    return () => {
      live = false;
    };
  }, []);

  async function submit(how: 'login' | 'signup'): Promise<void> {
    if (busy) return;
    const address = email.trim();
    if (!address || !password) {
      setError('Enter your email and password.');
      setDetails(null);
      (address ? passwordRef : emailRef).current?.focus();
      return;
    }
    if (how === 'signup' && password.length < MIN_NEW_PASSWORD) {
      setError(`A new account needs a password of at least ${MIN_NEW_PASSWORD} characters.`);
      setDetails(null);
      passwordRef.current?.focus();
      return;
    }
    setError('');
    setDetails(null);
    setBusy(true);
    // A new account goes on to "Add a desktop" (set before the shell reads the route).
    const before = window.location.hash;
    if (how === 'signup') window.location.hash = '#/add-desktop';
    try {
      await api.signIn(how, address, password);
    } catch (err) {
      if (how === 'signup') window.location.hash = before;
      setBusy(false);
      const human = humanError(err);
      setError(human.sentence);
      setDetails(human);
      passwordRef.current?.focus();
    }
  }

  const onSubmit = (e: FormEvent): void => {
    e.preventDefault();
    void submit('login');
  };

  return (
    <main id="main" className="signin">
      <section aria-labelledby="intro-title" className="intro">
        <h1 id="intro-title">AI SuperApp</h1>
        <p>
          Small AI apps that run on <strong>your own computer</strong>, with your own AI provider key, used from this
          page on any device. Your computer connects out to this relay; the relay passes the traffic through and can
          be shut out of it with end-to-end encryption.
        </p>
        <ol className="small-text">
          <li>Create an account here.</li>
          <li>Install the desktop node on your computer and approve it from this page.</li>
          <li>Pick an app from the Marketplace and run it.</li>
        </ol>
      </section>
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
          {details && (
            <details className="error-details">
              <summary>Details</summary>
              <p className="small-text">
                <code>{details.code}</code>: {details.details}
              </p>
            </details>
          )}
        </form>
        {(providers.length > 0 || providerError) && (
          <div className="providers" aria-labelledby="providers-title">
            <h3 id="providers-title">Or sign in with</h3>
            {providerError && (
              <>
                <p id="provider-error" className="error" role="alert">
                  {oidcErrorSentence(providerError)}
                </p>
                <details className="error-details">
                  <summary>Details</summary>
                  <p className="small-text">
                    <code>oidc_{providerError}</code>
                  </p>
                </details>
              </>
            )}
            <div className="row">
              {providers.map((p) => (
                <a key={p.name} className="button-link" href={p.start_url} data-provider={p.name}>
                  Sign in with {p.display_name}
                </a>
              ))}
            </div>
          </div>
        )}
      </section>
    </main>
  );
}
