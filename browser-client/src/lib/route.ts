/**
 * The page's routes, kept in the URL's fragment so that the relay serves one file, and
 * so that a reload, a new tab or a shared link opens the same screen. One route has a
 * real path: `/activate?code=…`, the link `desktop-node login` prints (the relay serves
 * the app for every path it has no API for).
 */

import { useEffect, useState } from 'react';

/** Where the page is. */
export type Route =
  | { page: 'workspace' }
  | { page: 'marketplace' }
  | { page: 'app'; appId: string }
  | { page: 'run'; appId: string }
  | { page: 'devices' }
  | { page: 'history' }
  | { page: 'account' }
  | { page: 'add-desktop' }
  | { page: 'activate'; code: string };

/** Reads a fragment such as `#/marketplace/seo-writer` (and the `/activate` path). */
export function parseRoute(hash: string, pathname = '/', search = ''): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'activate') return { page: 'activate', code: parts[1] ?? '' };
  if (!parts.length && pathname.replace(/\/+$/, '') === '/activate') {
    return { page: 'activate', code: new URLSearchParams(search).get('code') ?? '' };
  }
  if (parts[0] === 'marketplace' && parts[1]) return { page: 'app', appId: parts[1] };
  if (parts[0] === 'marketplace') return { page: 'marketplace' };
  if (parts[0] === 'run' && parts[1]) return { page: 'run', appId: parts[1] };
  if (parts[0] === 'devices') return { page: 'devices' };
  if (parts[0] === 'history') return { page: 'history' };
  if (parts[0] === 'account') return { page: 'account' };
  if (parts[0] === 'add-desktop') return { page: 'add-desktop' };
  return { page: 'workspace' };
}

/** The fragment for a route. */
export function routeHref(route: Route): string {
  switch (route.page) {
    case 'workspace':
      return '#/';
    case 'marketplace':
      return '#/marketplace';
    case 'app':
      return `#/marketplace/${encodeURIComponent(route.appId)}`;
    case 'run':
      return `#/run/${encodeURIComponent(route.appId)}`;
    case 'devices':
      return '#/devices';
    case 'history':
      return '#/history';
    case 'account':
      return '#/account';
    case 'add-desktop':
      return '#/add-desktop';
    case 'activate':
      return route.code ? `#/activate/${encodeURIComponent(route.code)}` : '#/activate';
  }
}

/** The current route, following the fragment. */
export function useRoute(): Route {
  const read = (): Route => parseRoute(window.location.hash, window.location.pathname, window.location.search);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const onHash = (): void => setRoute(read());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  return route;
}
