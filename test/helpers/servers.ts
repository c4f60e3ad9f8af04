import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TestServer {
  readonly port: number;
  readonly address: string;
  readonly url: string;
  /** Requests received so far. */
  readonly hits: () => number;
  close(): Promise<void>;
}

/** A real node:http server on a free loopback port, running `handler`. */
export async function startHttpServer(handler: http.RequestListener): Promise<TestServer> {
  let hits = 0;
  const server = http.createServer((req, res) => {
    hits++;
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    address: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    hits: () => hits,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Echoes method, url, selected headers and the body size as JSON. */
export function echoHandler(name: string): http.RequestListener {
  return (req, res) => {
    let bytes = 0;
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', () => {
      const body = JSON.stringify({ name, method: req.method, url: req.url, headers: req.headers, bytes, httpVersion: req.httpVersion });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
  };
}

/** Answers every request `status` with `body` as text/plain (and `headers`). */
export const answer =
  (status: number, body: string, headers: Record<string, string> = {}): http.RequestListener =>
  (_req, res) => {
    res.writeHead(status, { 'content-type': 'text/plain', ...headers });
    res.end(body);
  };
