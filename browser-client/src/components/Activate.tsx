/**
 * The page `desktop-node login` links to (`/activate?code=…`): the signed-in person
 * checks the code and the desktop's name, and approves or denies it. Without a code in
 * the link, a field to type it.
 */

import { useEffect, useState, type FormEvent } from 'react';
import type { PendingDeviceLogin } from '../lib/api';
import { humanError, type HumanError } from '../lib/errors';
import { routeHref } from '../lib/route';
import { ErrorNote } from './ErrorNote';
import { useApp } from './context';

type Step =
  | { kind: 'enter' }
  | { kind: 'checking' }
  | { kind: 'confirm'; login: PendingDeviceLogin }
  | { kind: 'approved'; name: string }
  | { kind: 'denied' };

export function ActivatePage({ code: linked }: { code: string }) {
  const { api, reloadDevices, reloadAccount } = useApp();
  const [code, setCode] = useState(linked);
  const [step, setStep] = useState<Step>({ kind: linked ? 'checking' : 'enter' });
  const [error, setError] = useState<HumanError | null>(null);
  const [busy, setBusy] = useState(false);

  async function look(typed: string): Promise<void> {
    setError(null);
    setStep({ kind: 'checking' });
    try {
      setStep({ kind: 'confirm', login: await api.pendingDeviceLogin(typed.trim()) });
    } catch (err) {
      setError(humanError(err));
      setStep({ kind: 'enter' });
    }
  }

  useEffect(() => {
    if (linked) void look(linked);
  }, []);

  async function decide(login: PendingDeviceLogin, approve: boolean): Promise<void> {
    setBusy(true);
    setError(null);
    try {
      await api.decideDeviceLogin(login.user_code, approve);
      setStep(approve ? { kind: 'approved', name: login.name } : { kind: 'denied' });
      reloadDevices();
      reloadAccount();
    } catch (err) {
      setError(humanError(err));
    } finally {
      setBusy(false);
    }
  }

  const submit = (e: FormEvent): void => {
    e.preventDefault();
    if (!code.trim()) {
      setError({ sentence: 'Type the code your desktop shows.', code: 'invalid', details: 'empty code' });
      return;
    }
    void look(code);
  };

  return (
    <>
      <h2 tabIndex={-1}>Approve a desktop</h2>
      {step.kind === 'enter' && (
        <form className="card" onSubmit={submit}>
          <div className="field">
            <label htmlFor="device-code">The code your desktop shows</label>
            <input
              id="device-code"
              autoComplete="off"
              autoCapitalize="characters"
              placeholder="BCDF-GHJK"
              value={code}
              onChange={(e) => setCode(e.target.value)}
            />
          </div>
          <button type="submit">Continue</button>
        </form>
      )}
      {step.kind === 'checking' && <p role="status">Looking for the desktop…</p>}
      {step.kind === 'confirm' && (
        <section className="card" aria-labelledby="confirm-title">
          <h3 id="confirm-title">
            Add “{step.login.name}” to your account?
          </h3>
          <p>
            Check that your desktop shows the code <strong id="confirm-code">{step.login.user_code}</strong>. Approve
            only a login you started yourself: the desktop will run apps for your account.
          </p>
          <div className="row">
            <button type="button" disabled={busy} onClick={() => void decide(step.login, true)}>
              Approve
            </button>
            <button type="button" className="secondary" disabled={busy} onClick={() => void decide(step.login, false)}>
              Deny
            </button>
          </div>
        </section>
      )}
      {step.kind === 'approved' && (
        <p className="card" role="status" id="activate-done">
          {step.name} is added. It finishes signing in by itself; then start it with <code>desktop-node run</code>.{' '}
          <a href={routeHref({ page: 'add-desktop' })}>What next</a>
        </p>
      )}
      {step.kind === 'denied' && (
        <p className="card" role="status">
          Denied: the desktop was not added.
        </p>
      )}
      {error && <ErrorNote error={error} />}
    </>
  );
}
