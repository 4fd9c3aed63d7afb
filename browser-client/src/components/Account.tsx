/**
 * The account page: the plan, the sessions list (sign one out, or all), changing the
 * password, and deleting the account with its devices and data.
 */

import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { MIN_NEW_PASSWORD, type SessionEntry } from '../lib/api';
import { humanError, type HumanError } from '../lib/errors';
import { ErrorNote } from './ErrorNote';
import { useApp } from './context';
import { planText } from './Shell';

/** "Chrome on Linux" from a User-Agent, or the start of it. */
export function browserName(ua: string | null): string {
  if (!ua) return 'Unknown client';
  const browser = /Edg\//.test(ua)
    ? 'Edge'
    : /Firefox\//.test(ua)
      ? 'Firefox'
      : /Chrom(e|ium)\//.test(ua)
        ? 'Chrome'
        : /Safari\//.test(ua)
          ? 'Safari'
          : /reqwest|curl/i.test(ua)
            ? 'Command line'
            : ua.slice(0, 40);
  const os = /Windows/.test(ua)
    ? 'Windows'
    : /Android/.test(ua)
      ? 'Android'
      : /iPhone|iPad/.test(ua)
        ? 'iOS'
        : /Mac OS X/.test(ua)
          ? 'macOS'
          : /Linux/.test(ua)
            ? 'Linux'
            : '';
  return os ? `${browser} on ${os}` : browser;
}

export function AccountPage() {
  const { api, account } = useApp();
  return (
    <>
      <h2 tabIndex={-1}>Account</h2>
      <section className="card" aria-labelledby="account-who">
        <h3 id="account-who">{api.user?.email}</h3>
        <p className="muted">{account ? planText(account) : ''}</p>
      </section>
      <Sessions />
      <ChangePassword />
      <DeleteAccount />
    </>
  );
}

function Sessions() {
  const { api } = useApp();
  const [sessions, setSessions] = useState<SessionEntry[] | null>(null);
  const [error, setError] = useState<HumanError | null>(null);
  const load = useCallback(() => {
    api.sessions().then(
      (list) => {
        setSessions(list);
        setError(null);
      },
      (err: unknown) => setError(humanError(err)),
    );
  }, [api]);
  useEffect(load, [load]);

  return (
    <section className="card" aria-labelledby="sessions-title">
      <h3 id="sessions-title">Where you are signed in</h3>
      {sessions === null && !error && <p className="muted">Loading…</p>}
      {sessions && (
        <ul className="plain-list" aria-label="Sessions">
          {sessions.map((s) => (
            <li key={s.id} className="session-row">
              <span>
                <strong>{browserName(s.user_agent)}</strong>
                {s.current && <span className="badge online">this browser</span>}
                <br />
                <span className="muted small-text">
                  signed in {new Date(s.started_at * 1000).toLocaleString()}, active{' '}
                  {new Date(s.last_active * 1000).toLocaleString()}
                </span>
              </span>
              {!s.current && (
                <button
                  type="button"
                  className="secondary small"
                  onClick={() =>
                    void api.endSession(s.id).then(load, (err: unknown) => setError(humanError(err)))
                  }
                  aria-label={`End the session of ${browserName(s.user_agent)}`}
                >
                  End session
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      <button type="button" className="secondary" onClick={() => void api.signOut(true)}>
        Sign out everywhere
      </button>
      <p className="muted small-text">Signs out every browser and command line of this account, this one too.</p>
      {error && <ErrorNote error={error} />}
    </section>
  );
}

function ChangePassword() {
  const { api } = useApp();
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [error, setError] = useState<HumanError | null>(null);
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent): Promise<void> => {
    e.preventDefault();
    setDone(false);
    setError(null);
    if (!current || !next) {
      setError({ sentence: 'Both passwords are required.', code: 'invalid', details: 'a field is empty' });
      return;
    }
    if (next.length < MIN_NEW_PASSWORD) {
      setError({
        sentence: `The new password needs at least ${MIN_NEW_PASSWORD} characters.`,
        code: 'invalid',
        details: `${next.length} characters`,
      });
      return;
    }
    setBusy(true);
    try {
      await api.changePassword(current, next);
      setCurrent('');
      setNext('');
      setDone(true);
    } catch (err) {
      setError(humanError(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="card" aria-labelledby="password-title" onSubmit={(e) => void submit(e)} noValidate>
      <h3 id="password-title">Change the password</h3>
      <div className="field">
        <label htmlFor="current-password">Current password</label>
        <input
          id="current-password"
          type="password"
          autoComplete="current-password"
          value={current}
          onChange={(e) => setCurrent(e.target.value)}
        />
      </div>
      <div className="field">
        <label htmlFor="new-password">New password</label>
        <input
          id="new-password"
          type="password"
          autoComplete="new-password"
          aria-describedby="new-password-hint"
          value={next}
          onChange={(e) => setNext(e.target.value)}
        />
        <span id="new-password-hint" className="muted hint">
          At least {MIN_NEW_PASSWORD} characters. Every other session is signed out.
        </span>
      </div>
      <button type="submit" disabled={busy}>
        Change the password
      </button>
      {done && (
        <p role="status" id="password-changed">
          Password changed. Other browsers and command lines are signed out.
        </p>
      )}
      {error && <ErrorNote error={error} />}
    </form>
  );
}

function DeleteAccount() {
  const { api, devices } = useApp();
  const [open, setOpen] = useState(false);
  const [password, setPassword] = useState('');
  const [error, setError] = useState<HumanError | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent): Promise<void> => {
    e.preventDefault();
    setError(null);
    if (!password) {
      setError({ sentence: 'Your password is required.', code: 'invalid', details: 'empty password' });
      return;
    }
    setBusy(true);
    try {
      await api.deleteAccount(password);
    } catch (err) {
      setError(humanError(err));
      setBusy(false);
    }
  };

  return (
    <section className="card" aria-labelledby="delete-title">
      <h3 id="delete-title">Delete the account</h3>
      {!open ? (
        <button type="button" className="secondary" onClick={() => setOpen(true)}>
          Delete the account…
        </button>
      ) : (
        <form onSubmit={(e) => void submit(e)} noValidate>
          <p>
            This deletes the account, its {devices.length} device{devices.length === 1 ? '' : 's'} (disconnected at
            once), its sessions, usage and ratings. It cannot be undone.
          </p>
          <div className="field">
            <label htmlFor="delete-password">Your password</label>
            <input
              id="delete-password"
              type="password"
              autoComplete="current-password"
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          </div>
          <div className="row">
            <button type="submit" className="danger" disabled={busy}>
              Delete my account
            </button>
            <button type="button" className="secondary" onClick={() => setOpen(false)}>
              Keep it
            </button>
          </div>
        </form>
      )}
      {error && <ErrorNote error={error} />}
    </section>
  );
}
