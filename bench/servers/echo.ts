import { createServer } from 'node:http';
import { ECHO_BODY } from '../lib/echo-body.ts';

/*
 * The upstream app of every target: a fixed 100-byte body, nothing else, so
 * the figures measure the hop in front of it. Runs in its own process so it
 * never shares an event loop with a proxy under test.
 */

const body = Buffer.from(ECHO_BODY);
const server = createServer((req, res) => {
  // Drain any request body so the connection stays reusable.
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
// Longer than any proxy's idle upstream timeout, so pooled connections are
// closed by the proxy, never under it in the middle of a request.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 130_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
