/**
 * Which marketplace app to suggest to a person whose desktop has no apps yet.
 *
 * The operator's examples come first (`hello-ai`, then the other examples this repository
 * publishes), then the most installed app that still has a version to install.
 */

import type { MarketApp } from './api';

/** The examples a new person is best started with, most suitable first. */
export const FIRST_APP_IDS: readonly string[] = ['hello-ai', 'seo-writer', 'notes', 'csv-summarizer', 'file-qa'];

/** The app to suggest, or null when the marketplace has nothing installable. */
export function suggestFirstApp(apps: readonly MarketApp[]): MarketApp | null {
  const installable = apps.filter((a) => a.latest_version !== null);
  for (const id of FIRST_APP_IDS) {
    const app = installable.find((a) => a.id === id);
    if (app) return app;
  }
  return [...installable].sort((a, b) => b.installs - a.installs || a.name.localeCompare(b.name))[0] ?? null;
}
