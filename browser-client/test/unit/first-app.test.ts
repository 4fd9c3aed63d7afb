/** The first app suggested to a new person: the examples first, then the most installed. */

import { describe, expect, it } from 'vitest';
import type { MarketApp } from '../../src/lib/api';
import { suggestFirstApp } from '../../src/lib/firstApp';

const app = (id: string, installs: number, latest: string | null = '1.0.0'): MarketApp => ({
  id,
  name: id.toUpperCase(),
  description: '',
  category: 'writing',
  author: 'someone',
  latest_version: latest,
  rating: { average: 0, count: 0 },
  installs,
});

describe('suggestFirstApp', () => {
  it('prefers the examples in their order', () => {
    expect(suggestFirstApp([app('popular', 900), app('notes', 1), app('hello-ai', 2)])?.id).toBe('hello-ai');
    expect(suggestFirstApp([app('popular', 900), app('notes', 1)])?.id).toBe('notes');
  });

  it('otherwise takes the most installed app that can be installed', () => {
    expect(suggestFirstApp([app('a', 3), app('b', 9), app('c', 50, null)])?.id).toBe('b');
    expect(suggestFirstApp([app('hello-ai', 5, null), app('x', 1)])?.id).toBe('x');
  });

  it('suggests nothing from an empty or withdrawn marketplace', () => {
    expect(suggestFirstApp([])).toBeNull();
    expect(suggestFirstApp([app('a', 1, null)])).toBeNull();
  });
});
