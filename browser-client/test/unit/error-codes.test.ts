/**
 * Every ERROR code of the wire protocol has a sentence for people (src/lib/errors.ts),
 * rather than the generic "Something went wrong".
 */
import { describe, expect, it } from 'vitest';
import { sentenceFor } from '../../src/lib/errors';
import { WIRE_ERROR_CODES } from '../../src/tunnel/errors';

describe('wire error codes', () => {
  const generic = sentenceFor('internal', 'x');

  it('each has its own sentence', () => {
    for (const code of WIRE_ERROR_CODES) {
      if (code === 'internal') continue;
      expect(sentenceFor(code, 'the relay message'), code).not.toBe(generic);
    }
  });

  it('unavailable is told apart from a desktop that went away', () => {
    const unavailable = sentenceFor('unavailable', 'the relay cannot locate the device right now');
    expect(unavailable).not.toBe(sentenceFor('peer_gone', 'x'));
    expect(unavailable).toMatch(/try again/i);
    expect(unavailable).not.toMatch(/offline/i);
  });
});
