/**
 * Errors written for people: one sentence per failure saying what happened and what to
 * do, with the code and the original message kept for a "Details" toggle
 * ({@link HumanError}). Also the form validator's messages ("must have required property
 * 'Topic'") in words ("Topic is required").
 */

import { RemoteError, TransportError, errorMessage } from '../tunnel/client';
import { ApiError } from './api';

/** The error's code (`device_offline`, `http_404`, `network`, …) and message. */
export function describeError(err: unknown): { code: string; message: string } {
  if (err instanceof DOMException && err.name === 'AbortError') return { code: 'cancelled', message: 'cancelled' };
  if (err instanceof RemoteError || err instanceof TransportError || err instanceof ApiError) {
    return { code: err.code, message: err.message };
  }
  return { code: 'internal', message: errorMessage(err) };
}

/** A failure as the page shows it: a sentence, and behind "Details" the code and message. */
export interface HumanError {
  /** What happened and what to do, in words. */
  sentence: string;
  /** The wire or HTTP code. */
  code: string;
  /** The original message (for a bug report). */
  details: string;
}

/**
 * Sentences by code. Codes whose own message already reads well for a person (the
 * relay's HTTP answers, e.g. "wrong email or password") are not here: the message is
 * the sentence, capitalised.
 */
const SENTENCES: Record<string, string> = {
  device_offline: 'Your desktop went offline. Start the desktop node on it (desktop-node run) and try again.',
  peer_gone: 'Your desktop went offline during the run. Start the desktop node on it and try again.',
  unknown_device: 'This desktop is no longer in your account. Choose another one on the Devices page.',
  unauthenticated: 'You were signed out. Sign in again to go on.',
  token_revoked: 'You were signed out (your sessions were ended). Sign in again to go on.',
  forbidden: 'Your account may not use this desktop.',
  unknown_app: 'This app is not installed on your desktop. Install it from the Marketplace first.',
  unknown_action: 'This app does not have that action. Its desktop may have an older version.',
  invalid_payload: 'The app did not accept the form’s input. Check the fields and try again.',
  app_failed: 'The app failed while running on your desktop.',
  provider_error: 'The AI provider on your desktop answered with an error. Check its key and model on the desktop.',
  limit_exceeded: 'Your plan’s limit is reached (devices, runs at once, or runs today).',
  busy: 'Your desktop is busy with other runs. Try again in a moment.',
  unavailable: 'The relay cannot find your desktop right now (a part of the service is restarting). Nothing is wrong with your desktop; try again in a few seconds.',
  denied: 'The request was refused on your desktop.',
  install_failed: 'The app could not be installed on your desktop.',
  unsupported: 'Your desktop’s node is too old for this. Update the desktop node.',
  unsupported_version: 'Your desktop’s node and this page speak different versions. Update the desktop node.',
  unknown_run: 'This run is no longer kept on your desktop (deleted, or past its retention).',
  cancelled: 'Cancelled.',
  stream_ended: 'The connection to your desktop ended before the answer was complete. Try again.',
  stream_reset: 'The connection to your desktop was cut before the answer was complete. Try again.',
  session_closed: 'The connection to the relay was lost. It reconnects by itself; try again in a moment.',
  connection_failed: 'Could not connect to the relay. Check your network; the page keeps trying.',
  malformed_frame: 'Your desktop sent something this page cannot read. Update the desktop node.',
  unexpected_message: 'Your desktop sent something this page cannot read. Update the desktop node.',
  e2e_failed: 'The end-to-end encryption with your desktop failed. Pair this browser again.',
  network: 'Could not reach the server. Check your network and try again.',
  http_500: 'Something went wrong on the server. Try again in a moment.',
  http_502: 'The server is unreachable right now. Try again in a moment.',
  http_503: 'The server is busy. Try again in a moment.',
  internal: 'Something went wrong. Try again; if it keeps happening, the details below help a bug report.',
};

/** `"wrong email or password"` → `"Wrong email or password."` */
function asSentence(message: string): string {
  const t = message.trim();
  if (!t) return 'Something went wrong.';
  const first = t[0]!.toUpperCase() + t.slice(1);
  return /[.!?…]$/.test(first) ? first : `${first}.`;
}

/**
 * A message without JavaScript stack lines (`    at ask (bot-logic.js:9:42)`) or
 * positions (`bot-logic.js:9:42`), on one line.
 */
export function withoutStack(message: string): string {
  return message
    .split('\n')
    .filter((line) => !/^\s*at\s/.test(line))
    .join(' ')
    .replace(/\s*\(?[\w./-]+\.[cm]?js:\d+(:\d+)?\)?/g, '')
    .replace(/\s+/g, ' ')
    .trim();
}

/**
 * An app's failure (`app_failed`) whose cause is a file the desktop refused, in words
 * (docs/desktop.md, "Files from the browser"); null for any other failure.
 */
export function fileRefusalSentence(message: string): string | null {
  const clean = withoutStack(message);
  const m = /\b(permission_denied|not_found|invalid): (.+)$/.exec(clean);
  if (!m) return null;
  const why = m[2]!.replace(/[.\s]+$/, '');
  switch (m[1]) {
    case 'permission_denied':
      return `Your desktop refused the app a file (${why}). Apps may open only the folders you granted them.`;
    case 'not_found':
      return `The app could not find a file on your desktop (${why}).`;
    default:
      return /neither absolute nor starts with|is not a usable path/.test(why)
        ? `The app was given a path your desktop does not understand (${why}). Start it with ~, $DOCUMENTS or another folder variable, or give a full path.`
        : null;
  }
}

/** One sentence for a code and its message. */
export function sentenceFor(code: string, message: string): string {
  if (code === 'app_failed') {
    const file = fileRefusalSentence(message);
    if (file) return file;
  }
  const known = SENTENCES[code];
  if (known) return known;
  // The relay's HTTP answers (4xx) are written for people already.
  if (/^http_4\d\d$/.test(code)) return asSentence(message);
  return SENTENCES.internal!;
}

/** Anything thrown, as a {@link HumanError}. */
export function humanError(err: unknown): HumanError {
  const { code, message } = describeError(err);
  return humanFromCode(code, message);
}

/** A code and message, as a {@link HumanError}. */
export function humanFromCode(code: string, message: string): HumanError {
  return { sentence: sentenceFor(code, message), code, details: message };
}

/** What the schema validator (ajv through @rjsf) reports about one field. */
export interface ValidationError {
  name?: string;
  property?: string;
  message?: string;
  params?: Record<string, unknown>;
  stack: string;
}

/** "topic" → "Topic"; "max_words" → "Max words". */
function fieldLabel(name: string): string {
  const words = name.replace(/[_-]+/g, ' ').replace(/([a-z])([A-Z])/g, '$1 $2').trim();
  return words ? words[0]!.toUpperCase() + words.slice(1) : 'This field';
}

/**
 * The validator's message in words, with the field's title (`titles`, by property
 * name) where the schema has one:
 * `must have required property 'Topic'` → `Topic is required`.
 */
export function validationSentence(e: ValidationError, titles: Record<string, string> = {}): string {
  const params = e.params ?? {};
  const prop = (e.property ?? '').replace(/^\./, '').split('.').pop() ?? '';
  const label = (key: string): string => titles[key] ?? fieldLabel(key);
  switch (e.name) {
    case 'required': {
      const missing = String(params.missingProperty ?? '');
      return `${label(missing)} is required`;
    }
    case 'minLength':
      return Number(params.limit) === 1
        ? `${label(prop)} is required`
        : `${label(prop)} needs at least ${String(params.limit)} characters`;
    case 'maxLength':
      return `${label(prop)} can have at most ${String(params.limit)} characters`;
    case 'minimum':
      return `${label(prop)} must be at least ${String(params.limit)}`;
    case 'maximum':
      return `${label(prop)} must be at most ${String(params.limit)}`;
    case 'minItems':
      return `${label(prop)} needs at least ${String(params.limit)} item${Number(params.limit) === 1 ? '' : 's'}`;
    case 'maxItems':
      return `${label(prop)} can have at most ${String(params.limit)} items`;
    case 'enum':
      return `${label(prop)} must be one of the choices`;
    case 'type':
      return `${label(prop)} must be ${params.type === 'integer' ? 'a whole number' : params.type === 'number' ? 'a number' : `a ${String(params.type)}`}`;
    case 'format':
      return `${label(prop)} must be a valid ${String(params.format)}`;
    case 'pattern':
      return `${label(prop)} is not in the expected form`;
    default: {
      // Anything else: the validator's words, with the field named.
      const required = /must have required property '([^']+)'/.exec(e.message ?? '');
      if (required) return `${label(required[1]!)} is required`;
      return prop ? `${label(prop)}: ${e.message ?? 'is not valid'}` : (e.message ?? 'is not valid');
    }
  }
}
