/**
 * Onboarding's second page, "Add a desktop": what to install on the computer (per
 * system), the one login command with this relay's address filled in (a code approved
 * in this browser, no password on the desktop), how to start it, and, once the desktop
 * is online, a first app to run.
 */

import { useState } from 'react';
import { routeHref } from '../lib/route';
import { useApp } from './context';

/** The operating systems the page has instructions for. */
export type Os = 'linux' | 'macos' | 'windows';

/** The visitor's system, from the browser's platform string. */
export function detectOs(platform: string): Os {
  const p = platform.toLowerCase();
  if (p.includes('win')) return 'windows';
  if (p.includes('mac') || p.includes('iphone') || p.includes('ipad')) return 'macos';
  return 'linux';
}

/**
 * How to get the desktop node onto a system: built from the AI SuperApp source with
 * Rust. (No download is offered here yet: the signed release channel the node updates
 * from has no public address this page could name.)
 */
export const INSTALL: Record<Os, { label: string; steps: string[] }> = {
  linux: {
    label: 'Linux',
    steps: [
      "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh",
      'cargo install --locked --path desktop-node',
    ],
  },
  macos: {
    label: 'macOS',
    steps: [
      "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh",
      'cargo install --locked --path desktop-node',
    ],
  },
  windows: {
    label: 'Windows',
    steps: ['winget install Rustlang.Rustup', 'cargo install --locked --path desktop-node'],
  },
};

/** The login command for this relay. */
export function loginCommand(origin: string): string {
  return `desktop-node login --relay ${origin}`;
}

/** A command with a copy button. */
export function Command({ text, label }: { text: string; label: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <div className="command">
      <pre>
        <code aria-label={label}>{text}</code>
      </pre>
      <button
        type="button"
        className="secondary small"
        onClick={() => {
          void navigator.clipboard?.writeText(text).then(
            () => setCopied(true),
            () => undefined,
          );
        }}
      >
        {copied ? 'Copied' : 'Copy'}
      </button>
    </div>
  );
}

export function AddDesktop() {
  const { devices } = useApp();
  const [os, setOs] = useState<Os>(() => detectOs(navigator.platform || navigator.userAgent));
  const online = devices.find((d) => d.online);
  const origin = window.location.origin;

  return (
    <>
      <h2 tabIndex={-1}>Add a desktop</h2>
      <p>
        Apps run on your own computer, with your own AI keys. The desktop node connects it to this page; nothing
        runs on the relay.
      </p>
      <section className="card" aria-labelledby="step-install">
        <h3 id="step-install">1. Install the desktop node</h3>
        <div className="row" role="group" aria-label="Your system">
          {(Object.keys(INSTALL) as Os[]).map((o) => (
            <button
              key={o}
              type="button"
              className={o === os ? 'small' : 'secondary small'}
              aria-pressed={o === os}
              onClick={() => setOs(o)}
            >
              {INSTALL[o].label}
            </button>
          ))}
        </div>
        <p className="muted small-text">
          In a terminal ({INSTALL[os].label}): install Rust, then, in the AI SuperApp source folder, build and install
          the node.
        </p>
        {INSTALL[os].steps.map((step, i) => (
          <Command key={step} text={step} label={`Install step ${i + 1}`} />
        ))}
      </section>
      <section className="card" aria-labelledby="step-login">
        <h3 id="step-login">2. Sign the desktop in</h3>
        <Command text={loginCommand(origin)} label="Login command" />
        <p className="muted small-text">
          It prints a link and a short code: open the link here, check the code, and approve. No password is typed on
          the desktop.
        </p>
      </section>
      <section className="card" aria-labelledby="step-run">
        <h3 id="step-run">3. Start it</h3>
        <Command text="desktop-node run" label="Run command" />
        <p className="muted small-text">
          It uses your AI provider’s key from the environment (for example <code>OPENAI_API_KEY</code>) or from{' '}
          <code>desktop-node keys set</code>.
        </p>
        <p id="add-desktop-status" role="status">
          {online ? (
            <>
              <strong>{online.name}</strong> is online.{' '}
              <a href={routeHref({ page: 'workspace' })}>Run your first app</a>
            </>
          ) : (
            'Waiting for your desktop to come online…'
          )}
        </p>
      </section>
    </>
  );
}
