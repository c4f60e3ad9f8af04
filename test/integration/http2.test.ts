import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

/*
 * HTTP/2 through outbound -> inbound -> app. Both sidecars use the protocol
 * their caller used (`auto`), so an app that sees HTTP/2 proves every hop was
 * HTTP/2, and one that sees HTTP/1.1 proves the h1 path through the same port.
 */

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

/** Echoes the request body reversed, with the app's view in headers and a sha256 of what it received in a trailer. */
const echo: Handler = (req, res) => {
  const hash = createHash('sha256');
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => (hash.update(c), chunks.push(c)));
  req.on('end', () => {
    // Http2ServerResponse mirrors ServerResponse's API; TypeScript cannot unify their overloads.
    const out = res as http.ServerResponse;
    out.writeHead(200, {
      'content-type': 'application/octet-stream',
      'x-app-http-version': req.httpVersion,
      'x-app-authority': String(req.headers[':authority'] ?? req.headers.host),
    });
    out.addTrailers({ 'x-body-sha256': hash.digest('hex'), 'x-app-status': 'done' });
    out.end(Buffer.concat(chunks).reverse());
  });
};

/** An app serving HTTP/1.1 (node:http) and h2c with prior knowledge (node:http2 createServer) on one port. */
async function startApp(handler: Handler) {
  const h1 = http.createServer(handler);
  const h2 = http2.createServer(handler);
  const seen = { h1Connections: 0, h2Connections: 0 };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.once('readable', () => {
      const head = socket.read(3) as Buffer | null; // "PRI" opens the HTTP/2 preface; no HTTP/1.1 method does
      if (head) socket.unshift(head);
      if (head?.toString('latin1') === 'PRI') seen.h2Connections++, h2.emit('connection', socket);
      else seen.h1Connections++, h1.emit('connection', socket);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface H2Reply {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  trailers: http2.IncomingHttpHeaders;
}

function h2Call(session: http2.ClientHttp2Session, path: string, body: Buffer): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': path, ':authority': 'orders', 'content-type': 'application/octet-stream' });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (headers = h));
    stream.on('trailers', (t) => (trailers = t));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(chunks), trailers }));
    stream.on('error', reject);
    stream.end(body);
  });
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const payload = (n: number, seed: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

describe('HTTP/2 through outbound -> inbound -> app', () => {
  let app: Awaited<ReturnType<typeof startApp>>;
  let server: TestSidecar;
  let client: TestSidecar;
  let session: http2.ClientHttp2Session;

  beforeAll(async () => {
    app = await startApp(echo);
    server = await startTestSidecar({ workload: { service: 'orders' }, inbound: { app: app.url } });
    client = await startTestSidecar({
      workload: { service: 'frontend' },
      inbound: { app: 'http://127.0.0.1:1' },
      services: [{ name: 'orders', endpoints: [{ address: `127.0.0.1:${server.inbound.port}` }] }],
    });
    session = http2.connect(client.outboundUrl);
    await once(session, 'connect');
  });
  afterAll(async () => {
    session?.close();
    await client?.drain(500);
    await server?.drain(500);
    await app?.close();
  });

  it('carries a 1 MiB request and response body and the response trailers over HTTP/2 on every hop', async () => {
    const body = payload(1024 * 1024, 1);
    const reply = await h2Call(session, '/echo?x=1', body);
    expect(reply.status).toBe(200);
    expect(reply.headers['x-app-http-version']).toBe('2.0');
    expect(reply.headers['x-app-authority']).toBe('orders');
    expect(reply.body.equals(Buffer.from(body).reverse())).toBe(true);
    expect(reply.trailers).toMatchObject({ 'x-body-sha256': sha256(body), 'x-app-status': 'done' });
  });

  it('serves HTTP/1.1 on the same outbound port, end to end as HTTP/1.1', async () => {
    const body = payload(64 * 1024, 2);
    const res = await request(`${client.outboundUrl}/echo`, { method: 'POST', headers: { host: 'orders' }, body });
    expect(res.statusCode).toBe(200);
    expect(res.headers['x-app-http-version']).toBe('1.1');
    expect(Buffer.from(await res.body.arrayBuffer()).equals(Buffer.from(body).reverse())).toBe(true);
    expect(app.seen.h1Connections).toBeGreaterThan(0);
  });

  it('runs 100 concurrent streams on one client connection, each getting its own answer', async () => {
    const before = app.seen.h2Connections;
    const bodies = Array.from({ length: 100 }, (_, i) => payload(4096 + i, i));
    const replies = await Promise.all(bodies.map((body, i) => h2Call(session, `/echo?stream=${i}`, body)));
    replies.forEach((reply, i) => {
      expect(reply.status).toBe(200);
      expect(reply.headers['x-app-http-version']).toBe('2.0');
      expect(reply.body.equals(Buffer.from(bodies[i]!).reverse())).toBe(true);
      expect(reply.trailers['x-body-sha256']).toBe(sha256(bodies[i]!));
    });
    // The server sidecar multiplexes onto its existing HTTP/2 connection to the app.
    expect(app.seen.h2Connections - before).toBe(0);
  });
});
