/** The first app suggested to a person whose desktop has nothing installed yet. */

import { useEffect, useState } from 'react';
import type { MarketApp } from '../lib/api';
import { suggestFirstApp } from '../lib/firstApp';
import { routeHref } from '../lib/route';
import { useApp } from './context';

/** "Start with <app>": a link to its page, where it installs and then runs. */
export function FirstAppSuggestion({ deviceName }: { deviceName: string }) {
  const { api } = useApp();
  const [app, setApp] = useState<MarketApp | null | undefined>(undefined);

  useEffect(() => {
    let stale = false;
    api.marketApps('', '').then(
      (list) => !stale && setApp(suggestFirstApp(list)),
      () => !stale && setApp(null),
    );
    return () => {
      stale = true;
    };
  }, [api]);

  if (app === undefined) return null;
  if (app === null) return <p className="muted">No apps installed yet: find one in the Marketplace.</p>;
  return (
    <div className="first-app" id="first-app">
      <p>
        No apps installed yet. A good first one: <strong>{app.name}</strong>
        {app.description ? ` (${app.description.replace(/\.$/, '')}).` : '.'}
      </p>
      <a className="button-link" href={routeHref({ page: 'app', appId: app.id })}>
        Start with {app.name}
      </a>{' '}
      <span className="muted small-text">It installs on {deviceName} once you approve it there.</span>
    </div>
  );
}
