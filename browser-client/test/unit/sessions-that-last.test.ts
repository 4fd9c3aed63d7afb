/**
 * Sessions that last, errors for people and the pieces of onboarding and the devices
 * page that have logic: signing in again from the refresh cookie (and tabs refreshing
 * one at a time), runs that outlive their screen, routes (deep links, `/activate`),
 * the mapping from error codes and validator messages to sentences, last-seen times in
 * the relay's seconds, and required fields first.
 */

import { describe, expect, it } from 'vitest';
import { Api, type LoginResponse, type TabSync } from '../../src/lib/api';
import { humanError, humanFromCode, sentenceFor, validationSentence } from '../../src/lib/errors';
import { parseRoute, routeHref } from '../../src/lib/route';
import { RunStore } from '../../src/lib/runs';
import { RemoteError, TransportError } from '../../src/tunnel/client';
import { ApiError } from '../../src/lib/api';
import { lastSeenText } from '../../src/components/Devices';
import { requiredFirst } from '../../src/components/MiniAppRunner';
import { detectOs, loginCommand } from '../../src/components/AddDesktop';
import { browserName } from '../../src/components/Account';

const cookieLogin = (token: string): LoginResponse => ({ token, expires_in: 900, user_id: 'u1', email: 'a@example.com' });
const json = (v: unknown, status = 200) => new Response(JSON.stringify(v), { status });

describe('Api with the refresh cookie', () => {
  it('asks for the cookie at sign-in and signs in again from it after a reload', async () => {
    const bodies: unknown[] = [];
    let cookie = false;
    const fetchFn = (async (path: string, init: RequestInit) => {
      const body = init.body ? JSON.parse(init.body as string) : null;
      bodies.push({ path, body });
      if (path === '/api/auth/login') {
        cookie = true;
        return json(cookieLogin('t1'));
      }
      if (path === '/api/auth/refresh') return cookie ? json(cookieLogin('t2')) : json({ error: 'not signed in' }, 401);
      if (path === '/api/auth/logout') {
        cookie = false;
        return new Response(null, { status: 204 });
      }
      return json({});
    }) as unknown as typeof fetch;

    // A page with no cookie: restore ends signed out, and says it finished.
    const fresh = new Api(fetchFn);
    const events: string[] = [];
    fresh.subscribe((e) => events.push(e));
    expect(await fresh.restore()).toBeNull();
    expect(fresh.restored).toBe(true);
    expect(events).toEqual(['restored']);

    await fresh.signIn('login', 'a@example.com', 'pw');
    expect(bodies.at(-1)).toEqual({ path: '/api/auth/login', body: { email: 'a@example.com', password: 'pw', cookie: true } });

    // The reload: a new page, the same cookie.
    const reloaded = new Api(fetchFn);
    expect(await reloaded.restore()).toEqual({ userId: 'u1', email: 'a@example.com' });
    expect(await reloaded.accessToken()).toBe('t2');
    // The page never held a refresh token: the refresh sent an empty body (the cookie).
    expect(bodies.find((b) => (b as { path: string }).path === '/api/auth/refresh')).toEqual({
      path: '/api/auth/refresh',
      body: {},
    });

    await reloaded.signOut();
    expect(reloaded.user).toBeNull();
    const again = new Api(fetchFn);
    expect(await again.restore()).toBeNull();
  });

  it('refreshes under the tabs’ lock and retries once when another tab just used the cookie', async () => {
    const order: string[] = [];
    let calls = 0;
    const fetchFn = (async (path: string) => {
      order.push(path);
      calls++;
      if (calls === 1) return json({ error: 'this refresh token was just used; try again' }, 401);
      return json(cookieLogin('t9'));
    }) as unknown as typeof fetch;
    const tabs: TabSync = {
      lock: async (name, fn) => {
        order.push(`lock ${name}`);
        return fn();
      },
    };
    const api = new Api(fetchFn, () => 0, tabs);
    expect(await api.restore()).not.toBeNull();
    expect(order).toEqual(['lock aisa-refresh', '/api/auth/refresh', '/api/auth/refresh']);
  });

  it('follows another tab’s sign-out and sign-in', async () => {
    let listener: ((e: { data: 'signed-in' | 'signed-out' }) => void) | null = null;
    const channel = {
      postMessage: () => undefined,
      set onmessage(fn: typeof listener) {
        listener = fn;
      },
      get onmessage() {
        return listener;
      },
    };
    const fetchFn = (async () => json(cookieLogin('t1'))) as unknown as typeof fetch;
    const api = new Api(fetchFn, () => 0, { channel });
    await api.restore();
    expect(api.user).not.toBeNull();
    listener!({ data: 'signed-out' });
    expect(api.user).toBeNull();
    listener!({ data: 'signed-in' });
    await new Promise((r) => setTimeout(r, 0));
    await api.restore();
    expect(api.user).not.toBeNull();
  });
});

describe('RunStore', () => {
  it('keeps a run going and its output when the screen is left, and shows it on return', async () => {
    const store = new RunStore();
    let chunk!: (d: string) => void;
    let finish!: () => void;
    const done = store.start('dev/app', ({ onChunk }) => {
      chunk = onChunk;
      return new Promise((resolve) => (finish = () => resolve({ chunks: 2, elapsedMs: 40 })));
    });
    chunk('Hello, ');
    // The screen is gone (nobody subscribed); the run goes on.
    chunk('world');
    expect(store.get('dev/app').state).toMatchObject({ phase: 'running', output: 'Hello, world' });
    expect(store.running).toBe(1);
    finish();
    await done;
    expect(store.get('dev/app').state).toMatchObject({ phase: 'done', output: 'Hello, world', chunks: 2 });
    // Another app's run is separate.
    expect(store.get('dev/other').state.phase).toBe('idle');
  });

  it('keeps the form, cancels one run, and drops all at sign-out', async () => {
    const store = new RunStore();
    const seen: string[] = [];
    store.subscribe(() => seen.push(store.get('k').state.phase));
    store.setForm('k', 'write', { topic: 'QUIC' });
    expect(store.get('k')).toMatchObject({ action: 'write', formData: { topic: 'QUIC' } });
    const signals: AbortSignal[] = [];
    const run = store.start('k', ({ signal }) => {
      signals.push(signal);
      return new Promise((_, reject) =>
        signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError'))),
      );
    });
    store.cancel('k');
    await run;
    expect(store.get('k').state.phase).toBe('cancelled');
    expect(signals[0]!.aborted).toBe(true);
    void store.start('k', ({ signal }) => {
      signals.push(signal);
      return new Promise(() => {});
    });
    store.abortAll();
    expect(signals[1]!.aborted).toBe(true);
    expect(store.get('k').state.phase).toBe('idle');
    expect(store.get('k').formData).toEqual({});
  });
});

describe('routes', () => {
  it('reads deep links and the /activate link the desktop prints', () => {
    expect(parseRoute('#/run/hello-ai')).toEqual({ page: 'run', appId: 'hello-ai' });
    expect(parseRoute('#/account')).toEqual({ page: 'account' });
    expect(parseRoute('#/devices')).toEqual({ page: 'devices' });
    expect(parseRoute('#/add-desktop')).toEqual({ page: 'add-desktop' });
    expect(parseRoute('', '/activate', '?code=BCDF-GHJK')).toEqual({ page: 'activate', code: 'BCDF-GHJK' });
    expect(parseRoute('', '/activate/', '')).toEqual({ page: 'activate', code: '' });
    expect(parseRoute('#/activate/BCDF-GHJK')).toEqual({ page: 'activate', code: 'BCDF-GHJK' });
    // A fragment wins over the path (the person navigated on from the link).
    expect(parseRoute('#/marketplace', '/activate', '?code=X')).toEqual({ page: 'marketplace' });
    for (const r of [{ page: 'account' }, { page: 'devices' }, { page: 'add-desktop' }] as const) {
      expect(parseRoute(routeHref(r))).toEqual(r);
    }
  });
});

describe('errors for people', () => {
  it('gives one sentence per code, with the code and message kept for Details', () => {
    expect(humanError(new RemoteError('device_offline', 'device d-1 is not connected'))).toEqual({
      sentence: 'Your desktop went offline. Start the desktop node on it (desktop-node run) and try again.',
      code: 'device_offline',
      details: 'device d-1 is not connected',
    });
    expect(humanError(new TransportError('stream_reset', 'stream reset by the peer: Received RESET_STREAM')).sentence).toBe(
      'The connection to your desktop was cut before the answer was complete. Try again.',
    );
    expect(humanError(new RemoteError('app_failed', 'fs.read: invalid at logic.js:12:7')).sentence).toBe(
      'The app failed while running on your desktop.',
    );
    // The relay's HTTP answers are already words: capitalised, with a full stop.
    expect(humanError(new ApiError(401, 'wrong email or password')).sentence).toBe('Wrong email or password.');
    expect(humanError(new ApiError(0, 'could not reach the server: Failed to fetch')).sentence).toBe(
      'Could not reach the server. Check your network and try again.',
    );
    expect(humanError(new ApiError(500, 'internal error')).sentence).toMatch(/^Something went wrong on the server/);
    // Unknown codes and plain exceptions: a general sentence, never the stack.
    expect(sentenceFor('brand_new_code', 'x')).toMatch(/^Something went wrong/);
    expect(humanError(new TypeError('x is undefined')).code).toBe('internal');
    expect(humanFromCode('cancelled', 'cancelled').sentence).toBe('Cancelled.');
  });

  it('turns the validator’s messages into sentences with the field’s title', () => {
    const titles = { topic: 'Topic', max_words: 'Maximum words' };
    expect(
      validationSentence(
        { name: 'required', property: 'topic', message: "must have required property 'Topic'", params: { missingProperty: 'topic' }, stack: '' },
        titles,
      ),
    ).toBe('Topic is required');
    expect(validationSentence({ message: "must have required property 'Topic'", stack: '' })).toBe('Topic is required');
    expect(
      validationSentence({ name: 'minLength', property: '.topic', message: 'must NOT have fewer than 3 characters', params: { limit: 3 }, stack: '' }, titles),
    ).toBe('Topic needs at least 3 characters');
    expect(validationSentence({ name: 'minLength', property: '.topic', params: { limit: 1 }, stack: '' }, titles)).toBe('Topic is required');
    expect(validationSentence({ name: 'maximum', property: '.max_words', params: { limit: 500 }, stack: '' }, titles)).toBe(
      'Maximum words must be at most 500',
    );
    expect(validationSentence({ name: 'type', property: '.count', params: { type: 'integer' }, stack: '' })).toBe(
      'Count must be a whole number',
    );
    expect(validationSentence({ name: 'enum', property: '.tone', params: {}, stack: '' })).toBe('Tone must be one of the choices');
  });
});

describe('devices, forms and onboarding', () => {
  it('reads last-seen times in the relay’s seconds (not as milliseconds: "1/21/1970")', () => {
    const now = Date.UTC(2026, 10, 29, 12, 0, 0);
    const secs = (ms: number) => Math.floor(ms / 1000);
    expect(lastSeenText(secs(now - 20_000), now)).toBe('just now');
    expect(lastSeenText(secs(now - 5 * 60_000), now)).toBe('5 minutes ago');
    expect(lastSeenText(secs(now - 3 * 3_600_000), now)).toBe('3 hours ago');
    expect(lastSeenText(secs(now - 3 * 86_400_000), now)).toContain('2026');
    expect(lastSeenText(null, now)).toBe('never');
  });

  it('puts required fields first unless the author chose an order', () => {
    const schema = {
      type: 'object' as const,
      properties: { tone: { type: 'string' as const }, keywords: { type: 'array' as const }, topic: { type: 'string' as const } },
      required: ['topic'],
    };
    expect(requiredFirst(schema, {})['ui:order']).toEqual(['topic', 'tone', 'keywords']);
    expect(requiredFirst(schema, { 'ui:order': ['tone', '*'] })['ui:order']).toEqual(['tone', '*']);
    expect(requiredFirst({ ...schema, required: [] }, {})['ui:order']).toBeUndefined();
  });

  it('fills the relay’s address into the login command and names systems and browsers', () => {
    expect(loginCommand('https://relay.example.net')).toBe('desktop-node login --relay https://relay.example.net');
    expect(detectOs('Win32')).toBe('windows');
    expect(detectOs('MacIntel')).toBe('macos');
    expect(detectOs('Linux x86_64')).toBe('linux');
    expect(browserName('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36')).toBe(
      'Chrome on Linux',
    );
    expect(browserName('Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605 Version/18.0 Mobile Safari/604.1')).toBe(
      'Safari on iOS',
    );
    expect(browserName(null)).toBe('Unknown client');
  });
});
