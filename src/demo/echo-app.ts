import type { AddressInfo } from 'node:net';
import { nodeHttp as http } from '../core/node-builtins.ts';

export interface EchoApp {
  readonly port: number;
  close(): Promise<void>;
}

/** A tiny app that answers with what it saw: the demo's stand-in for a real service. */
export async function startEchoApp(name: string): Promise<EchoApp> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({
        service: name,
        method: req.method,
        url: req.url,
        host: req.headers.host,
        requestId: req.headers['x-request-id'],
        forwardedFor: req.headers['x-forwarded-for'],
        bodyBytes: Buffer.concat(chunks).length,
        // The verified caller, as the inbound sidecar reports it (Envoy's XFCC format).
        caller: /URI=([^;,]+)/.exec(String(req.headers['x-forwarded-client-cert'] ?? ''))?.[1],
      });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
