/**
 * Starts the real system as processes for the browser tests: the local OpenAI-format
 * provider, relay-edge (embedded SQLite, serving the built web app), and a desktop node
 * signed in as a test user with the example app installed.
 *
 * Binaries come from `AISA_BIN_DIR` (default `../target/debug`); the example app's wasm
 * from `AISA_GUEST_WASM` (default the `target/guest` build). `scripts/test.sh` builds both.
 */

import { spawn, type ChildProcess, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { zipSync, strToU8 } from 'fflate';

const root = resolve(__dirname, '../../..');
const binDir = process.env.AISA_BIN_DIR ?? join(root, 'target/debug');
const guestWasm =
  process.env.AISA_GUEST_WASM ?? join(root, 'target/guest/wasm32-unknown-unknown/release/hello_ai.wasm');

// The desktop node keeps its secrets in the `file` backend here (no Secret Service in a
// test), sealed under this passphrase. Set in this process's environment so that every
// `desktop-node` a test runs (here, flows.ts, encryption.test.ts) opens the same store.
process.env.AISA_SECRETS_BACKEND ??= 'file';
process.env.AISA_PASSPHRASE ??= 'browser tests: not a secret';

export const EMAIL = 'browser-test@example.com';
export const PASSWORD = 'browser-password-123';
const API_KEY = 'sk-browser-test';

function bin(name: string): string {
  return join(binDir, name);
}

/** A child process whose output is kept for failure reports. */
class Child {
  output = '';
  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    proc.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
  }

  /** Resolves with the first match of `pattern` in the output. */
  waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    return new Promise((resolvePromise, reject) => {
      const check = (): boolean => {
        const m = this.output.match(pattern);
        if (m) {
          clearInterval(timer);
          clearTimeout(deadline);
          resolvePromise(m);
          return true;
        }
        return false;
      };
      const timer = setInterval(check, 25);
      const deadline = setTimeout(() => {
        clearInterval(timer);
        reject(new Error(`${this.name}: no ${pattern} within ${timeoutMs} ms; output:\n${this.output}`));
      }, timeoutMs);
      this.proc.once('exit', (code) => {
        if (!check()) {
          clearInterval(timer);
          clearTimeout(deadline);
          reject(new Error(`${this.name} exited (${code}); output:\n${this.output}`));
        }
      });
      check();
    });
  }

  /** Stops the process (SIGINT, then SIGKILL) and waits for it. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.proc.once('exit', () => r()));
    this.proc.kill('SIGINT');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * Starts one of the workspace's binaries; with a `prefix` (e.g. `ip netns exec NS`) the
 * binary runs under that command (which must exec it, so signals reach it).
 */
function start(name: string, args: string[], env: Record<string, string> = {}, prefix: string[] = []): Child {
  const [command, ...before] = prefix.length ? [...prefix, bin(name)] : [bin(name)];
  const proc = spawn(command!, [...before, ...args], {
    env: { ...process.env, RUST_LOG: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Child(name, proc);
}

/** Starts relay-edge serving the built web app (`serveArgs`: more `serve` options). */
function startRelay(dataDir: string, quicListen: string, httpListen: string, serveArgs: string[] = []): Child {
  return start('relay-edge', [
    '--data-dir',
    dataDir,
    'serve',
    ...serveArgs,
    '--quic-listen',
    quicListen,
    '--http-listen',
    httpListen,
    '--web-root',
    join(root, 'browser-client/dist'),
  ]);
}

function run(name: string, args: string[], input?: string): string {
  return execFileSync(bin(name), args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/**
 * Where and how the system runs; the defaults (everything on 127.0.0.1, the node in this
 * network namespace) suit every test but the UDP-blocking one (`udp-blocked.test.ts`).
 */
export interface SystemOptions {
  /** The address the relay (HTTP and QUIC) and the provider listen on; default 127.0.0.1. */
  host?: string;
  /** The relay's UDP (QUIC) port; default any free one. */
  quicPort?: number;
  /** More `relay-edge serve` options (e.g. `--config`, `--metrics-addr`). */
  relayArgs?: string[];
  /** A command the node runs under (e.g. `ip netns exec NS`); default none. */
  nodePrefix?: string[];
  /** More environment for `desktop-node run` (e.g. `RUST_LOG`). */
  nodeEnv?: Record<string, string>;
}

/** The running system. */
export class System {
  private constructor(
    readonly dir: string,
    readonly httpUrl: string,
    readonly providerUrl: string,
    private readonly children: Child[],
    private node: Child | null,
    private readonly options: SystemOptions = {},
  ) {}

  /** Processes that were stopped or replaced, kept for their output. */
  private readonly finished: Child[] = [];

  static async start(options: SystemOptions = {}): Promise<System> {
    const dir = mkdtempSync(join(tmpdir(), 'aisa-browser-test-'));
    const children: Child[] = [];
    const host = options.host ?? '127.0.0.1';
    try {
      const provider = start('fake-provider', ['--listen', `${host}:0`, '--api-key', API_KEY]);
      children.push(provider);
      const providerUrl = (await provider.waitFor(/fake-provider: (http:\S+)/))[1]!;

      const relayDir = join(dir, 'relay');
      run('relay-edge', ['--data-dir', relayDir, 'user', 'add', EMAIL, '--password', PASSWORD]);
      const relay = startRelay(relayDir, `${host}:${options.quicPort ?? 0}`, `${host}:0`, options.relayArgs);
      children.push(relay);
      const httpUrl = (await relay.waitFor(/relay-edge: (http:\/\/\S+)/))[1]!;

      const home = join(dir, 'node');
      run(
        'desktop-node',
        ['--home', home, 'login', '--relay', httpUrl, '--email', EMAIL, '--password-stdin', '--name', 'browser desk'],
        PASSWORD,
      );
      run('desktop-node', ['--home', home, 'apps', 'install-local', guestWasm, '--id', 'hello-ai', '--action', 'write,echo']);
      const system = new System(dir, httpUrl, providerUrl, children, null, options);
      await system.startNode();
      return system;
    } catch (err) {
      await Promise.all(children.map((c) => c.stop()));
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Stops the relay and starts it again on the same ports and data (accounts, tokens and
   * the certificate survive), as an operator's restart would. Browsers and desktops lose
   * their sessions and must reconnect by themselves.
   */
  async restartRelay(): Promise<void> {
    const i = this.children.findIndex((c) => c.name === 'relay-edge');
    const old = this.children[i]!;
    const quic = old.output.match(/on udp (\S+)\)/)?.[1];
    if (!quic) throw new Error(`no QUIC address in the relay's output:\n${old.output}`);
    await old.stop();
    this.finished.push(old);
    const relay = startRelay(join(this.dir, 'relay'), quic, new URL(this.httpUrl).host, this.options.relayArgs);
    this.children[i] = relay;
    await relay.waitFor(/relay-edge: (http:\/\/\S+)/);
  }

  /** How many times the desktop node has connected to the relay since it started. */
  nodeConnections(): number {
    return this.node?.output.match(/connected to the relay/g)?.length ?? 0;
  }

  /** Starts (or restarts) the desktop node and waits until the relay shows it online. */
  async startNode(): Promise<void> {
    const node = start(
      'desktop-node',
      ['--home', join(this.dir, 'node'), 'run', '--ai-base-url', this.providerUrl],
      { OPENAI_API_KEY: API_KEY, ...this.options.nodeEnv },
      this.options.nodePrefix,
    );
    this.node = node;
    await node.waitFor(/connected to the relay/);
  }

  /** Everything the desktop node has printed since it (last) started. */
  nodeOutput(): string {
    return this.node?.output ?? '';
  }

  /** The desktop node's home folder. */
  get nodeHome(): string {
    return join(this.dir, 'node');
  }

  /** Signs in over the HTTP API and returns an access token. */
  async token(email = EMAIL, password = PASSWORD): Promise<string> {
    const res = await fetch(`${this.httpUrl}/api/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email, password }),
    });
    if (!res.ok) throw new Error(`login: HTTP ${res.status}: ${await res.text()}`);
    return ((await res.json()) as { token: string }).token;
  }

  /**
   * Publishes an unsigned bundle through the developer portal (POST /api/portal/apps),
   * which checks, signs and lists it in the marketplace. Returns the portal's answer.
   */
  async publish(bundle: Uint8Array): Promise<{ id: string; version: string; sha256: string }> {
    const res = await fetch(`${this.httpUrl}/api/portal/apps`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/zip', Authorization: `Bearer ${await this.token()}` },
      body: new Blob([new Uint8Array(bundle)]),
    });
    if (res.status !== 201) throw new Error(`publish: HTTP ${res.status}: ${await res.text()}`);
    return (await res.json()) as { id: string; version: string; sha256: string };
  }

  /** Approves (or denies) a pending install request on the desktop, as its owner would. */
  decide(decision: 'approve' | 'deny', appId: string): string {
    return run('desktop-node', ['--home', this.nodeHome, 'apps', decision, appId]);
  }

  /** Stops the desktop node (its output stays in {@link logs}). */
  async stopNode(): Promise<void> {
    if (!this.node) return;
    const node = this.node;
    this.node = null;
    this.finished.push(node);
    const started = Date.now();
    await node.stop();
    node.output += `\n(stopped after ${Date.now() - started} ms, ${node.proc.signalCode ?? `exit ${node.proc.exitCode}`})\n`;
  }

  /**
   * Kills the desktop node with SIGKILL, as a crash or a pulled plug would: no drain of
   * its runs, no goodbye to the relay (its output stays in {@link logs}).
   */
  async killNode(): Promise<void> {
    if (!this.node) return;
    const node = this.node;
    this.node = null;
    this.finished.push(node);
    if (node.proc.exitCode === null && node.proc.signalCode === null) {
      const exited = new Promise<void>((r) => node.proc.once('exit', () => r()));
      node.proc.kill('SIGKILL');
      await exited;
    }
    node.output += `\n(killed with SIGKILL by the test)\n`;
  }

  /** Everything the processes printed, for failure reports. */
  logs(): string {
    return [...this.finished, ...this.children, ...(this.node ? [this.node] : [])]
      .map((c) => `--- ${c.name}\n${c.output}`)
      .join('\n');
  }

  async stop(): Promise<void> {
    await this.stopNode();
    await Promise.all(this.children.map((c) => c.stop()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** What an example bundle contains besides its code. */
export interface BundleSpec {
  id: string;
  name: string;
  version: string;
  description: string;
  category: string;
  actionSchema: Record<string, unknown>;
  uiSchema?: Record<string, unknown>;
  permissions?: Record<string, unknown>;
}

/**
 * An unsigned `.aisapp` bundle (docs/miniapp-format.md) whose code is the example app's wasm
 * (`entry: "wasm"`), for publishing through the portal.
 */
export function wasmBundle(spec: BundleSpec): Uint8Array {
  const manifest = {
    id: spec.id,
    name: spec.name,
    version: spec.version,
    description: spec.description,
    category: spec.category,
    author: { name: 'E2E Tests' },
    entry: 'wasm',
    runtime: '>=0.1.0, <0.2.0',
  };
  const json = (v: unknown): Uint8Array => strToU8(JSON.stringify(v, null, 2));
  return zipSync({
    'manifest.json': json(manifest),
    'action-schema.json': json(spec.actionSchema),
    'ui-schema.json': json(spec.uiSchema ?? {}),
    'permissions.json': json(spec.permissions ?? {}),
    'logic.wasm': new Uint8Array(readFileSync(guestWasm)),
  });
}
