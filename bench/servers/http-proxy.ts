import { Agent, createServer } from 'node:http';
import httpProxy from 'http-proxy';

/*
 * Baseline: the common Node reverse proxy (`http-proxy`) with a keep-alive
 * upstream pool, in its own process. Usage: http-proxy.ts <target-url>
 */

const target = process.argv[2];
if (!target) {
  process.stderr.write('usage: http-proxy.ts <target-url>\n');
  process.exit(2);
}

const agent = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256 });
const proxy = httpProxy.createProxyServer({ target, agent });
proxy.on('error', (err, _req, res) => {
  if ('writeHead' in res && !res.headersSent) {
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`bad gateway: ${err.message}\n`);
  } else {
    res.destroy();
  }
});

const server = createServer((req, res) => proxy.web(req, res));
server.keepAliveTimeout = 120_000;
server.headersTimeout = 130_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
