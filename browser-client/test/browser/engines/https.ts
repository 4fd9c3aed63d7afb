/**
 * An https front for the relay's plain-http port, as a TLS-terminating proxy or load
 * balancer is in a real deployment: requests and WebSocket upgrades are passed to the
 * relay byte for byte, with `X-Forwarded-Proto: https` and the browser's `Host`.
 *
 * Why: WebKitGTK 2.50 keeps `Secure` cookies only from https (Chromium and Firefox treat
 * http://127.0.0.1 as secure; WebKitGTK does not), and the relay's refresh cookie is
 * `Secure`. Served over plain http, a new page load signs the person out in WebKit; the
 * same page through this front keeps them signed in. The certificate is self-signed
 * (made with `openssl` for 127.0.0.1, valid one day), so the engine must accept it
 * (WebDriver's `acceptInsecureCerts`).
 *
 * What this does not do: HTTP/2, keep-alive pooling to the relay, or anything a real
 * proxy does for load; one test page is all it serves.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer, type Server } from 'node:https';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A running https front; {@link close} stops it. */
export interface HttpsFront {
  /** `https://127.0.0.1:PORT`, the address pages use. */
  url: string;
  close(): Promise<void>;
}

/** A self-signed certificate and key for 127.0.0.1 (PEM), made by `openssl`. */
function selfSigned(): { key: Buffer; cert: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'aisa-https-front-'));
  try {
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1',
        '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Starts an https front on 127.0.0.1 (a free port) for the relay at `target` (`http://host:port`). */
export async function startHttpsFront(target: string): Promise<HttpsFront> {
  const to = new URL(target);
  const port = Number(to.port || 80);
  const sockets = new Set<Socket>();
  const server: Server = createServer(selfSigned(), (req, res) => {
    const upstream = httpRequest(
      {
        host: to.hostname,
        port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, 'x-forwarded-proto': 'https' },
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`https front: the relay did not answer: ${err.message}`);
    });
    req.pipe(upstream);
  });
  // A WebSocket upgrade: the request head is written to the relay as it came, then the
  // two connections are joined.
  server.on('upgrade', (req, client: Socket, head: Buffer) => {
    const relay = connect(port, to.hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      lines.push('X-Forwarded-Proto: https', '', '');
      relay.write(lines.join('\r\n'));
      if (head.length) relay.write(head);
      relay.pipe(client);
      client.pipe(relay);
    });
    for (const s of [relay, client]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        relay.destroy();
        client.destroy();
      });
    }
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolveListen());
  });
  const address = server.address();
  if (!address || typeof address !== 'object') throw new Error('https front: no address');
  return {
    url: `https://127.0.0.1:${address.port}`,
    close: () =>
      new Promise<void>((resolveClose) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolveClose());
      }),
  };
}
