/** The marketplace: search, a category filter, and the matching apps. */

import { useEffect, useState, type FormEvent } from 'react';
import type { Category, MarketApp } from '../lib/api';
import { describeError } from '../lib/errors';
import { routeHref } from '../lib/route';
import { useApp } from './context';

/** "Ada Lovelace" from either author form. */
export function authorName(author: MarketApp['author']): string {
  return typeof author === 'string' ? author : author.name;
}

/** "4.5 ★ (12 ratings)" or "no ratings yet". */
export function ratingText(r: MarketApp['rating']): string {
  if (!r || r.count === 0) return 'no ratings yet';
  return `${r.average.toFixed(1)} ★ (${r.count} rating${r.count === 1 ? '' : 's'})`;
}

export function Marketplace() {
  const { api } = useApp();
  const [query, setQuery] = useState('');
  const [category, setCategory] = useState('');
  const [search, setSearch] = useState({ q: '', category: '' });
  const [categories, setCategories] = useState<Category[]>([]);
  const [apps, setApps] = useState<MarketApp[] | null>(null);
  const [error, setError] = useState('');

  useEffect(() => {
    let stale = false;
    api.categories().then(
      (c) => !stale && setCategories(c),
      () => undefined, // the filter just stays empty; the list reports the problem
    );
    return () => {
      stale = true;
    };
  }, [api]);

  useEffect(() => {
    let stale = false;
    setApps(null);
    setError('');
    api.marketApps(search.q, search.category).then(
      (list) => !stale && setApps(list),
      (err: unknown) => !stale && setError(describeError(err).message),
    );
    return () => {
      stale = true;
    };
  }, [api, search]);

  const onSubmit = (e: FormEvent): void => {
    e.preventDefault();
    setSearch({ q: query.trim(), category });
  };

  return (
    <>
      <h2 tabIndex={-1}>Marketplace</h2>
      <form className="card search" role="search" onSubmit={onSubmit}>
        <div className="field grow">
          <label htmlFor="market-q">Search apps</label>
          <input id="market-q" type="search" value={query} onChange={(e) => setQuery(e.target.value)} />
        </div>
        <div className="field">
          <label htmlFor="market-category">Category</label>
          <select
            id="market-category"
            value={category}
            onChange={(e) => {
              setCategory(e.target.value);
              setSearch({ q: query.trim(), category: e.target.value });
            }}
          >
            <option value="">All categories</option>
            {categories.map((c) => (
              <option key={c.name} value={c.name}>
                {c.name} ({c.count})
              </option>
            ))}
          </select>
        </div>
        <button type="submit">Search</button>
      </form>
      <p role="status" className="muted" id="market-status">
        {error
          ? `Could not load the marketplace: ${error}`
          : apps === null
            ? 'Loading apps…'
            : `${apps.length} app${apps.length === 1 ? '' : 's'} found.`}
      </p>
      {apps && apps.length > 0 && (
        <ul className="market-list" aria-label="Apps">
          {apps.map((a) => (
            <li key={a.id} className="card market-item">
              <h3>
                <a href={routeHref({ page: 'app', appId: a.id })}>{a.name}</a>
              </h3>
              <p>{a.description}</p>
              <p className="muted small-text">
                {a.category} · by {authorName(a.author)} · version {a.latest_version} · {ratingText(a.rating)} ·{' '}
                {a.installs} install{a.installs === 1 ? '' : 's'}
              </p>
            </li>
          ))}
        </ul>
      )}
    </>
  );
}
