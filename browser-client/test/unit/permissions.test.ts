/** What an app asks for, in plain words. */

import { describe, expect, it } from 'vitest';
import { describeFolder, describePermissions } from '../../src/lib/permissions';

describe('describePermissions', () => {
  it('says each permission in a sentence', () => {
    expect(
      describePermissions({
        ai: true,
        filesystem: { read: ['$DOCUMENTS', '$HOME/notes'], write: ['$APP_DATA', '/srv/out'] },
        network: ['api.example.com', '*.example.org'],
        clipboard: true,
      }),
    ).toEqual([
      'Use the AI model on your desktop, with your AI key (the key itself stays on the desktop).',
      'Read files in your Documents folder and “notes” in your home folder.',
      'Create and change files in “/srv/out”.',
      'Connect to the internet, only to “api.example.com” and “*.example.org”.',
      'Read and write your clipboard.',
    ]);
  });

  it('asks for nothing when nothing (or only its own folder) is requested', () => {
    expect(describePermissions({})).toEqual([]);
    expect(describePermissions(null)).toEqual([]);
    expect(describePermissions({ ai: false, clipboard: false, network: [], filesystem: { write: ['$APP_DATA'] } })).toEqual([]);
  });

  it('names folder variables for people', () => {
    expect(describeFolder('$DOWNLOADS')).toBe('your Downloads folder');
    expect(describeFolder('$UNKNOWN')).toBe('“$UNKNOWN”');
  });
});
