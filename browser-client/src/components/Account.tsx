/**
 * The account page: the plan, how the account signs in (a password or not, each linked
 * identity provider, and unlinking one), the sessions list (sign one out, or all),
 * changing the password, and deleting the account with its devices and data.
 *
 * An account made by an identity provider has no password. It can set one (and then
 * also sign in with it) or delete itself once the person has confirmed who they are
 * with a fresh sign-in at the provider: the relay wants one within the last few
 * minutes (`reauth_max_age_secs`), and the "Sign in again with …" button does that
 * round trip (`/api/auth/oidc/{name}/start?reauth=1`), coming back to this page.
 */

import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { identityLabel, identityWho, isLastWayIn, shownText, type LinkedIdentity, type SignInMethods } from '../lib/account';
import { ApiError, MIN_NEW_PASSWORD, type Account, type SessionEntry } from '../lib/api';
import { humanError, type HumanError } from '../lib/errors';
import { fetchOidcProviders, type OidcProvider } from '../lib/oidc';
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

/** Where confirming who you are with `provider` starts (and comes back to this page). */
export function reauthHref(provider: Pick<OidcProvider, 'start_url'>): string {
  return `${provider.start_url}?reauth=1`;
}

/**
 * Seconds left in which the session's last sign-in counts as proof of who the person is
 * (0 when it does not, or the relay did not say).
 */
export function proofSecondsLeft(
  account: Pick<Account, 'auth_time' | 'reauth_max_age_secs'>,
  nowSecs: number,
): number {
  if (account.auth_time == null || account.reauth_max_age_secs == null) return 0;
  return Math.max(0, account.auth_time + account.reauth_max_age_secs - nowSecs);
}

/** "5 minutes", "1 minute", "90 seconds". */
function minutesText(secs: number): string {
  if (secs < 120) return `${secs} seconds`;
  const m = Math.round(secs / 60);
  return m === 1 ? '1 minute' : `${m} minutes`;
}

/** The providers this account signs in with, with their names on the buttons. */
function useAccountProviders(account: Account | null): OidcProvider[] {
  const [offered, setOffered] = useState<OidcProvider[]>([]);
  useEffect(() => {
    let live = true;
    void fetchOidcProviders().then((list) => {
      if (live) setOffered(list);
    });
    return () => {
      live = false;
    };
  }, []);
  const linked = account?.providers ?? [];
  return offered.filter((p) => linked.includes(p.name));
}

/** The "Sign in again with …" links. */
function ReauthButtons({ providers }: { providers: OidcProvider[] }) {
  return (
    <div className="row">
      {providers.map((p) => (
        <a key={p.name} className="button-link" href={reauthHref(p)}>
          Sign in again with {p.display_name}
        </a>
      ))}
    </div>
  );
}

/** An error, with the way to confirm who you are when that is what it asks for. */
function ProofError({ error, providers }: { error: { human: HumanError; reauth: boolean }; providers: OidcProvider[] }) {
  return (
    <>
      <ErrorNote error={error.human} />
      {error.reauth && <ReauthButtons providers={providers} />}
    </>
  );
}

/** A caught error, noting whether the relay asks for a fresh provider sign-in. */
function proofError(err: unknown): { human: HumanError; reauth: boolean } {
  return { human: humanError(err), reauth: err instanceof ApiError && err.reason?.code === 'reauth_required' };
}

export function AccountPage() {
  const { api, account } = useApp();
  const providers = useAccountProviders(account);
  // Older relays do not say: they have a password.
  const noPassword = account?.has_password === false;
  return (
    <>
      <h2 tabIndex={-1}>Account</h2>
      <section className="card" aria-labelledby="account-who">
        <h3 id="account-who">{api.user?.email}</h3>
        <p className="muted">{account ? planText(account) : ''}</p>
      </section>
      <SignInMethodsCard providers={providers} />
      <Sessions />
      {noPassword && account ? (
        <>
          <ConfirmIdentity account={account} providers={providers} />
          <SetPassword providers={providers} />
        </>
      ) : (
        <ChangePassword />
      )}
      <DeleteAccount noPassword={noPassword} providers={providers} />
    </>
  );
}

/** For an account without a password: whether a recent provider sign-in proves who it is. */
function ConfirmIdentity({ account, providers }: { account: Account; providers: OidcProvider[] }) {
  const [now, setNow] = useState(() => Math.floor(Date.now() / 1000));
  useEffect(() => {
    const timer = setInterval(() => setNow(Math.floor(Date.now() / 1000)), 15_000);
    return () => clearInterval(timer);
  }, []);
  const left = proofSecondsLeft(account, now);
  const window = minutesText(account.reauth_max_age_secs ?? 300);
  const names = providers.map((p) => p.display_name).join(' or ') || 'your identity provider';
  return (
    <section className="card" aria-labelledby="confirm-title">
      <h3 id="confirm-title">Confirm it is you</h3>
      <p>
        You sign in with {names}; this account has no password. To set a password, unlink a provider or delete the
        account, sign in with {names} again first: it counts for {window}.
      </p>
      {left > 0 ? (
        <p role="status" id="identity-confirmed">
          Confirmed. For the next {minutesText(left)} you can set a password, unlink a provider or delete the account.
        </p>
      ) : (
        <ReauthButtons providers={providers} />
      )}
    </section>
  );
}

/** For an account without a password: set the first one. */
function SetPassword({ providers }: { providers: OidcProvider[] }) {
  const { api, reloadAccount } = useApp();
  const [next, setNext] = useState('');
  const [error, setError] = useState<{ human: HumanError; reauth: boolean } | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent): Promise<void> => {
    e.preventDefault();
    setError(null);
    if (next.length < MIN_NEW_PASSWORD) {
      setError({
        human: {
          sentence: `The password needs at least ${MIN_NEW_PASSWORD} characters.`,
          code: 'invalid',
          details: `${next.length} characters`,
        },
        reauth: false,
      });
      return;
    }
    setBusy(true);
    try {
      await api.changePassword(null, next);
      setNext('');
      // The account now has a password: the page shows the change form and says so.
      reloadAccount();
    } catch (err) {
      setError(proofError(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="card" aria-labelledby="set-password-title" onSubmit={(e) => void submit(e)} noValidate>
      <h3 id="set-password-title">Set a password</h3>
      <p className="muted">Then you can also sign in with your email address and this password.</p>
      <div className="field">
        <label htmlFor="first-password">New password</label>
        <input
          id="first-password"
          type="password"
          autoComplete="new-password"
          aria-describedby="first-password-hint"
          value={next}
          onChange={(e) => setNext(e.target.value)}
        />
        <span id="first-password-hint" className="muted hint">
          At least {MIN_NEW_PASSWORD} characters. Every other session is signed out.
        </span>
      </div>
      <button type="submit" disabled={busy}>
        Set the password
      </button>
      {error && <ProofError error={error} providers={providers} />}
    </form>
  );
}

/** A date in the person's words: "30 Nov 2026". */
function dayText(secs: number): string {
  return new Date(secs * 1000).toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}

/**
 * How the account signs in: whether it has a password, and each linked provider
 * identity with an "Unlink" that asks to confirm (with the password, for an account
 * that has one; an account without one needs a recent provider sign-in, and the relay's
 * refusal offers it). The relay refuses to unlink the last way in, with a sentence.
 */
function SignInMethodsCard({ providers }: { providers: OidcProvider[] }) {
  const { api, reloadAccount } = useApp();
  const [methods, setMethods] = useState<SignInMethods | null>(null);
  const [error, setError] = useState<{ human: HumanError; reauth: boolean } | null>(null);
  const [unlinking, setUnlinking] = useState<LinkedIdentity | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const load = useCallback(() => {
    api.signInMethods().then(
      (m) => setMethods(m),
      (err: unknown) => setError({ human: humanError(err), reauth: false }),
    );
  }, [api]);
  useEffect(load, [load]);

  const unlinked = (identity: LinkedIdentity): void => {
    setUnlinking(null);
    setDone(`${identityLabel(identity, methods?.identities)} is unlinked: it no longer signs you in to this account.`);
    load();
    reloadAccount();
  };

  return (
    <section className="card" aria-labelledby="signin-methods-title">
      <h3 id="signin-methods-title">How you sign in</h3>
      {methods === null && !error && <p className="muted">Loading…</p>}
      {methods && (
        <ul className="plain-list" aria-label="Sign-in methods">
          <li className="session-row" id="method-password">
            <span>
              <strong>Password</strong>
              <br />
              <span className="muted small-text">
                {methods.has_password
                  ? 'You can sign in with your email address and password.'
                  : 'This account has no password. You can set one below.'}
              </span>
            </span>
          </li>
          {methods.identities.map((identity) => (
            <li key={identity.id} className="session-row identity-row">
              <span>
                <strong>{shownText(identity.provider_name)}</strong> {identityWho(identity, methods.identities)}
                <br />
                <span className="muted small-text">
                  Linked {dayText(identity.linked_at)}, last used {dayText(identity.last_used)}.
                  {isLastWayIn(methods) && ' This is your only way to sign in.'}
                </span>
              </span>
              <button
                type="button"
                className="secondary small"
                aria-label={`Unlink ${identityLabel(identity, methods.identities)}`}
                aria-expanded={unlinking?.id === identity.id}
                onClick={() => {
                  setError(null);
                  setDone(null);
                  setUnlinking(identity);
                }}
              >
                Unlink
              </button>
            </li>
          ))}
        </ul>
      )}
      {methods && methods.identities.length === 0 && (
        <p className="muted" id="no-identities">
          No identity provider is linked. Signing in with a provider that has verified your email address links it.
        </p>
      )}
      {unlinking && methods && (
        <UnlinkForm
          identity={unlinking}
          label={identityLabel(unlinking, methods.identities)}
          hasPassword={methods.has_password}
          onDone={() => unlinked(unlinking)}
          onCancel={() => {
            setUnlinking(null);
            setError(null);
          }}
          onError={setError}
        />
      )}
      {done && (
        <p role="status" id="identity-unlinked">
          {done}
        </p>
      )}
      {error && <ProofError error={error} providers={providers} />}
    </section>
  );
}

/** Confirms unlinking one identity: the password when the account has one. Escape cancels. */
function UnlinkForm({
  identity,
  label,
  hasPassword,
  onDone,
  onCancel,
  onError,
}: {
  identity: LinkedIdentity;
  /** The identity in one phrase ({@link identityLabel}). */
  label: string;
  hasPassword: boolean;
  onDone: () => void;
  onCancel: () => void;
  onError: (e: { human: HumanError; reauth: boolean } | null) => void;
}) {
  const { api } = useApp();
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent): Promise<void> => {
    e.preventDefault();
    onError(null);
    if (hasPassword && !password) {
      onError({
        human: { sentence: 'Your password is required.', code: 'invalid', details: 'empty password' },
        reauth: false,
      });
      return;
    }
    setBusy(true);
    try {
      await api.unlinkIdentity(identity.id, hasPassword ? password : null);
      onDone();
    } catch (err) {
      onError(proofError(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form
      id="unlink-form"
      aria-label={`Unlink ${label}`}
      onSubmit={(e) => void submit(e)}
      onKeyDown={(e) => {
        if (e.key === 'Escape') onCancel();
      }}
      noValidate
    >
      <p>
        Unlink {label}? You will no longer sign in to this account with it. Your sessions stay signed in.
      </p>
      {hasPassword && (
        <div className="field">
          <label htmlFor="unlink-password">Your password</label>
          <input
            id="unlink-password"
            type="password"
            autoComplete="current-password"
            autoFocus
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </div>
      )}
      <div className="row">
        <button type="submit" className="danger" disabled={busy} autoFocus={!hasPassword}>
          Unlink {shownText(identity.provider_name)}
        </button>
        <button type="button" className="secondary" onClick={onCancel}>
          Keep it
        </button>
      </div>
    </form>
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

function DeleteAccount({ noPassword, providers }: { noPassword: boolean; providers: OidcProvider[] }) {
  const { api, devices } = useApp();
  const [open, setOpen] = useState(false);
  const [password, setPassword] = useState('');
  const [error, setError] = useState<{ human: HumanError; reauth: boolean } | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent): Promise<void> => {
    e.preventDefault();
    setError(null);
    if (!noPassword && !password) {
      setError({
        human: { sentence: 'Your password is required.', code: 'invalid', details: 'empty password' },
        reauth: false,
      });
      return;
    }
    setBusy(true);
    try {
      await api.deleteAccount(noPassword ? null : password);
    } catch (err) {
      setError(proofError(err));
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
          {!noPassword && (
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
          )}
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
      {error && <ProofError error={error} providers={providers} />}
    </section>
  );
}
