/** The page's routes, kept in the URL's fragment so that the relay serves one file. */

import { useEffect, useState } from 'react';

/** Where the page is. */
export type Route =
  | { page: 'workspace' }
  | { page: 'marketplace' }
  | { page: 'app'; appId: string }
  | { page: 'run'; appId: string };

/** Reads a fragment such as `#/marketplace/seo-writer`. */
export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'marketplace' && parts[1]) return { page: 'app', appId: parts[1] };
  if (parts[0] === 'marketplace') return { page: 'marketplace' };
  if (parts[0] === 'run' && parts[1]) return { page: 'run', appId: parts[1] };
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
  }
}

/** The current route, following the fragment. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const onHash = (): void => setRoute(parseRoute(window.location.hash));
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  return route;
}
