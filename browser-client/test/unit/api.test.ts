/** The HTTP API client: errors, the SPA fallback, and the shared token refresh. */

import { describe, expect, it } from 'vitest';
import { Api, ApiError, orderedActions, type LoginResponse } from '../../src/lib/api';

function login(token: string, expiresIn = 900): LoginResponse {
  return { token, refresh_token: `r-${token}`, expires_in: expiresIn, user_id: 'u1', email: 'a@example.com' };
}

/** A fake server: answers by path, records each request. */
function server(routes: Record<string, (body: unknown, auth: string | null) => Response>) {
  const seen: { path: string; auth: string | null; body: unknown }[] = [];
  const fetchFn = (async (path: string, init: RequestInit) => {
    const headers = new Headers(init.headers);
    const body = init.body ? JSON.parse(init.body as string) : null;
    seen.push({ path, auth: headers.get('Authorization'), body });
    const route = routes[path];
    if (!route) return new Response('<!doctype html><title>app</title>', { status: 200 });
    return route(body, headers.get('Authorization'));
  }) as unknown as typeof fetch;
  return { fetchFn, seen };
}

const json = (v: unknown, status = 200) => new Response(JSON.stringify(v), { status });

describe('Api', () => {
  it('signs in, sends the bearer token, and reports the server’s error message', async () => {
    const { fetchFn, seen } = server({
      '/api/auth/login': (b) =>
        (b as { password: string }).password === 'right' ? json(login('t1')) : json({ error: 'wrong email or password' }, 401),
      '/api/devices': () => json([]),
    });
    const api = new Api(fetchFn);
    await expect(api.signIn('login', 'a@example.com', 'wrong')).rejects.toMatchObject({ status: 401, message: 'wrong email or password' });
    expect(api.user).toBeNull();
    await api.signIn('login', 'a@example.com', 'right');
    expect(api.user).toEqual({ userId: 'u1', email: 'a@example.com' });
    await api.devices();
    expect(seen.at(-1)).toMatchObject({ path: '/api/devices', auth: 'Bearer t1' });
  });

  it('treats the web page the relay serves for an unknown path as a 404', async () => {
    const api = new Api(server({}).fetchFn);
    const err = await api.marketApp('hello-ai').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(404);
  });

  it('refreshes an expiring token once for all callers, and signs out when the refresh is refused', async () => {
    let now = 0;
    let refreshes = 0;
    let refuse = false;
    const { fetchFn, seen } = server({
      '/api/auth/login': () => json(login('t1', 120)),
      '/api/auth/refresh': () => {
        refreshes++;
        return refuse ? json({ error: 'refresh token reused' }, 401) : json(login(`t${refreshes + 1}`, 120));
      },
      '/api/account': () => json({}),
      '/api/auth/logout': () => new Response(null, { status: 204 }),
    });
    const api = new Api(fetchFn, () => now);
    const events: string[] = [];
    api.subscribe((e) => events.push(e));
    await api.signIn('login', 'a@example.com', 'pw');
    expect(await api.accessToken()).toBe('t1');
    now = 61_000; // a minute before the 120 s expiry
    const tokens = await Promise.all([api.accessToken(), api.accessToken(), api.accessToken()]);
    expect(tokens).toEqual(['t2', 't2', 't2']);
    expect(refreshes).toBe(1);
    expect(seen.find((s) => s.path === '/api/auth/refresh')?.body).toEqual({ refresh_token: 'r-t1' });
    expect(events).toEqual(['signed-in', 'token-refreshed']);

    now = 200_000;
    refuse = true;
    await expect(api.account()).rejects.toMatchObject({ status: 401 });
    expect(api.user).toBeNull();
    expect(events.at(-1)).toBe('signed-out');
  });
});

describe('orderedActions', () => {
  const schemas = { outline: {}, write: {}, zeta: {} };

  it('follows the author\'s order the relay lists', () => {
    expect(orderedActions({ action_schema: schemas, actions: ['write', 'zeta', 'outline'] })).toEqual([
      'write',
      'zeta',
      'outline',
    ]);
  });

  it('keeps schemas the list misses and drops names without a schema', () => {
    expect(orderedActions({ action_schema: schemas, actions: ['zeta', 'gone'] })).toEqual(['zeta', 'outline', 'write']);
    expect(orderedActions({ action_schema: schemas })).toEqual(['outline', 'write', 'zeta']);
    expect(orderedActions({ action_schema: null, actions: ['write'] })).toEqual([]);
  });
});
