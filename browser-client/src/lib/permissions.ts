/** An app's `permissions.json`, said in plain words for the person deciding to install it. */

import type { Permissions } from './api';

/** Folder variables of permission paths (docs/guest-abi.md, "Paths"), as a person calls them. */
const FOLDERS: Record<string, string> = {
  $HOME: 'your home folder',
  $DOCUMENTS: 'your Documents folder',
  $DOWNLOADS: 'your Downloads folder',
  $DESKTOP: 'your Desktop folder',
  $APP_DATA: 'its own data folder',
};

/** "your Documents folder", "$HOME/notes" → "the folder notes in your home folder", "/srv" → "/srv". */
export function describeFolder(path: string): string {
  const known = FOLDERS[path];
  if (known) return known;
  const m = /^(\$[A-Z_]+)\/(.+)$/.exec(path);
  if (m && FOLDERS[m[1]!]) return `“${m[2]}” in ${FOLDERS[m[1]!]}`;
  return `“${path}”`;
}

function list(items: string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/** One sentence per thing the app asks for; an empty list when it asks for nothing. */
export function describePermissions(p: Permissions | null | undefined): string[] {
  if (!p) return [];
  const out: string[] = [];
  if (p.ai) out.push('Use the AI model on your desktop, with your AI key (the key itself stays on the desktop).');
  const read = (p.filesystem?.read ?? []).filter((r) => r !== '$APP_DATA');
  const write = (p.filesystem?.write ?? []).filter((r) => r !== '$APP_DATA');
  if (read.length) out.push(`Read files in ${list(read.map(describeFolder))}.`);
  if (write.length) out.push(`Create and change files in ${list(write.map(describeFolder))}.`);
  if (p.network?.length) out.push(`Connect to the internet, only to ${list(p.network.map((h) => `“${h}”`))}.`);
  if (p.clipboard) out.push('Read and write your clipboard.');
  return out;
}
