/**
 * The browser's request-stream machine (src/tunnel/machine/request.ts) against the Rust
 * machine's whole exchanges (tunnel/vectors/exchanges.json, written by
 * tunnel/tests/exchanges.rs, or the file named by EXCHANGES_FILE): the same bytes out,
 * the same events for the same bytes in, the same answers to the clock; plus cases of
 * its own on a virtual clock.
 */

import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

import { encodeEnvelope, encodeFrame, fromHex, toHex, type Envelope, type OpenHeader } from '../../src/tunnel/codec';
import { CANCEL_GRACE_MS, ClientRequest, type ClientEvent } from '../../src/tunnel/machine/request';
import { obj, str, toEnvelope, toOpenHeader, type Json } from './serde-json';

const here = dirname(fileURLToPath(import.meta.url));
const exchangesPath = process.env['EXCHANGES_FILE'] || resolve(here, '../../../tunnel/vectors/exchanges.json');

type Step =
  | { op: 'open'; send: string }
  | { op: 'receive'; hex: string; events: Json[] }
  | { op: 'finish'; events: Json[] }
  | { op: 'cancel'; at_ms: number; send: string }
  | { op: 'timeout'; at_ms: number; events: Json[] };

interface Exchange {
  name: string;
  header: Json;
  request: Json;
  steps: Step[];
}

function loadExchanges(): Exchange[] {
  if (!existsSync(exchangesPath)) {
    throw new Error(
      `exchange vectors not found at ${exchangesPath}: run \`cargo test -p aisa-tunnel --test exchanges\` ` +
        '(it writes them with UPDATE_VECTORS=1) or set EXCHANGES_FILE',
    );
  }
  const file = JSON.parse(readFileSync(exchangesPath, 'utf8')) as { exchanges: Exchange[] };
  return file.exchanges;
}

/** An event as the vectors write it. */
type VectorEvent =
  | { type: 'message' | 'done'; envelope: Envelope }
  | { type: 'failed'; code: string; reason: string; message: string };

function toEvent(v: Json): VectorEvent {
  const o = obj(v, 'event');
  const type = str(o, 'type');
  if (type === 'message' || type === 'done') return { type, envelope: toEnvelope(o['envelope']) };
  if (type === 'failed') return { type, code: str(o, 'code'), reason: str(o, 'reason'), message: str(o, 'message') };
  throw new Error(`unknown event type ${type}`);
}

/**
 * The machine's event in the vectors' shape. A decode failure's message is the decoder's
 * own wording (postcard's on the Rust side), so for `malformed_message` only the
 * `malformed envelope: ` prefix is compared.
 */
function asVector(e: ClientEvent, expected: VectorEvent | undefined): VectorEvent {
  if (e.type !== 'failed') return e;
  const { code, reason } = e.refusal;
  let { message } = e.refusal;
  if (reason === 'malformed_message' && expected?.type === 'failed' && message.startsWith('malformed envelope: ')) {
    expect(expected.message.startsWith('malformed envelope: '), expected.message).toBe(true);
    message = expected.message;
  }
  return { type: 'failed', code, reason, message };
}

function checkEvents(got: ClientEvent[], want: Json[], where: string): void {
  const expected = want.map(toEvent);
  expect(got.map((e, i) => asVector(e, expected[i])), where).toEqual(expected);
}

describe(`exchanges from ${exchangesPath}`, () => {
  const exchanges = loadExchanges();

  it('has the exchanges the Rust side claims: success, refusal, cancel, timeout, FIN, bad bytes', () => {
    expect(exchanges.length).toBeGreaterThanOrEqual(9);
    const ops = new Set(exchanges.flatMap((x) => x.steps.map((s) => s.op)));
    expect([...ops].sort()).toEqual(['cancel', 'finish', 'open', 'receive', 'timeout']);
  });

  for (const x of exchanges) {
    it(x.name, () => {
      const header: OpenHeader = toOpenHeader(x.header);
      const request = toEnvelope(x.request);
      const machine = ClientRequest.plain(header, request);
      x.steps.forEach((step, i) => {
        const where = `step ${i} (${step.op})`;
        switch (step.op) {
          case 'open':
            expect(toHex(machine.pollTransmit() ?? new Uint8Array()), where).toBe(step.send);
            break;
          case 'receive':
            checkEvents(machine.receive(fromHex(step.hex)), step.events, where);
            break;
          case 'finish': {
            const e = machine.finish();
            checkEvents(e ? [e] : [], step.events, where);
            break;
          }
          case 'cancel':
            machine.cancel(step.at_ms);
            expect(toHex(machine.pollTransmit() ?? new Uint8Array()), where).toBe(step.send);
            break;
          case 'timeout': {
            const e = machine.handleTimeout(step.at_ms);
            checkEvents(e ? [e] : [], step.events, where);
            break;
          }
        }
      });
      expect(machine.pollTransmit(), 'nothing left to send').toBeNull();
    });
  }
});

// --- cases of its own, on a virtual clock ------------------------------------------------

const header: OpenHeader = { deviceId: 'dev', kind: 'Action', token: 't', e2e: null };
const frame = (env: Envelope) => encodeFrame(encodeEnvelope(env));
const chunk = (seq: number): Envelope => ({ requestId: 1, deviceId: '', body: { type: 'StreamChunk', seq, data: `c${seq}` } });

function machine(): ClientRequest {
  const m = ClientRequest.plain(header, { requestId: 1, deviceId: 'dev', body: { type: 'GetStatus' } });
  expect(m.pollTransmit()).not.toBeNull();
  return m;
}

describe('ClientRequest', () => {
  it('sends one CANCEL only, and nothing once the request is over', () => {
    const m = machine();
    m.cancel(0);
    m.cancel(10);
    expect(m.pollTransmit()).toEqual(frame({ requestId: 1, deviceId: 'dev', body: { type: 'Cancel' } }));
    expect(m.pollTransmit()).toBeNull();

    const over = machine();
    over.receive(frame({ requestId: 1, deviceId: '', body: { type: 'StreamEnd', chunks: 0, elapsedMs: 1 } }));
    over.cancel(0);
    expect(over.pollTransmit()).toBeNull();
    expect(over.deadline()).toBeNull();
  });

  it('counts the grace period from the cancel on the caller clock, and stops once answered', () => {
    const m = machine();
    expect(m.deadline()).toBeNull();
    expect(m.handleTimeout(1e12)).toBeNull(); // no cancel, no deadline
    m.cancel(1_000);
    expect(m.deadline()).toBe(1_000 + CANCEL_GRACE_MS);
    expect(m.handleTimeout(1_000 + CANCEL_GRACE_MS - 1)).toBeNull();
    const [ev] = m.receive(frame({ requestId: 1, deviceId: '', body: { type: 'Error', code: 'cancelled', message: 'stopped' } }));
    expect(ev).toMatchObject({ type: 'failed', refusal: { reason: 'remote_error', code: 'cancelled', remoteMessage: 'stopped' } });
    expect(m.deadline()).toBeNull();
    expect(m.handleTimeout(1e12)).toBeNull();
  });

  it('takes opened envelopes one at a time (the encrypted path) with the same rules', () => {
    const m = ClientRequest.withBody(header, 1, Uint8Array.of(9, 9));
    expect(m.pollTransmit()!.subarray(-6)).toEqual(Uint8Array.of(0, 0, 0, 2, 9, 9));
    expect(m.handleEnvelope(chunk(0))).toEqual({ type: 'message', envelope: chunk(0) });
    m.cancelWithBody(0, Uint8Array.of(7));
    expect(m.pollTransmit()).toEqual(Uint8Array.of(0, 0, 0, 1, 7));
    expect(m.handleEnvelope(chunk(1))).toBeNull();
    const end: Envelope = { requestId: 1, deviceId: '', body: { type: 'StreamEnd', chunks: 2, elapsedMs: 3 } };
    expect(m.handleEnvelope(end)).toEqual({ type: 'done', envelope: end });
    expect(m.isDone).toBe(true);
    expect(m.finish()).toBeNull();
  });

  it('refuses a frame over the size limit as soon as its length arrives', () => {
    const m = machine();
    const [ev] = m.receive(Uint8Array.of(0x7f, 0xff, 0xff, 0xff));
    expect(ev).toMatchObject({ type: 'failed', refusal: { reason: 'malformed_frame', code: 'malformed_frame' } });
    expect(m.receive(frame(chunk(0)))).toEqual([]);
  });
});
