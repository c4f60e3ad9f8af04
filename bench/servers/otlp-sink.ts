import { createServer } from 'node:http';

/*
 * A collector that accepts every OTLP/HTTP export and keeps nothing: the
 * tracing rows of bench:telemetry measure the sidecar's cost of making and
 * sending spans, not a collector's. Counts what it got, for the report.
 */

let requests = 0;
let bytes = 0;
const server = createServer((req, res) => {
  req.on('data', (chunk: Buffer) => (bytes += chunk.length));
  req.on('end', () => {
    if (req.url === '/stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ requests, bytes }));
      return;
    }
    requests++;
    // An empty ExportTraceServiceResponse: success, nothing rejected.
    res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': 0 });
    res.end();
  });
});
server.keepAliveTimeout = 120_000;
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
