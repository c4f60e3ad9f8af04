import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.ts';
import { packagesLoadedBy } from '../helpers/load-record.ts';
import { plaintextSidecarConfig, type SidecarProcess } from '../helpers/sidecar-process.ts';
import { policyDoc, writeSnapshot } from '../helpers/static-policy.ts';

/*
 * A sidecar's memory and start-up are paid once per pod: what its config does
 * not use must not be imported. Each of these packages costs 5-25 MB of RSS
 * and tens of milliseconds when loaded alone; a static import from a module
 * every sidecar loads would bring it back, and this test names it.
 */

const OPTIONAL = {
  '@grpc/grpc-js': 'gRPC: the policy subscriber and the CA client',
  '@grpc/proto-loader': 'gRPC service definitions',
  '@peculiar/x509': 'certificates (mTLS)',
  ajv: 'the JSON Schema compiler (ValidationPolicy)',
  jose: 'JWT verification (RequestAuthentication)',
  ioredis: 'the Redis client (global rate limits)',
  '@opentelemetry/sdk-trace': 'the tracing SDK (tracing off)',
  '@opentelemetry/exporter-trace-otlp-proto': 'the OTLP exporter (tracing off)',
  koffi: 'the FFI for original destinations (interception)',
  'redos-detector': 'the regex safety check of policy documents',
  'quickjs-emscripten-core': 'the sandbox of checks of your own (Filter documents)',
  '@jitl/quickjs-wasmfile-release-sync': 'the QuickJS WebAssembly engine (Filter documents)',
  undici: 'the HTTP/2 client (an HTTP/2 upstream), or a readiness path or health check to probe over HTTP',
  'node:internal/undici': "Node's own undici, which an ES import of node:http loads (src/core/node-builtins.ts)",
  'node:internal/amaro': "Node's TypeScript stripper (a Filter source the policy server sent without its JavaScript)",
  'node:http2': "Node's HTTP/2, with node:http (an HTTP/2 caller, an HTTP/2 upstream, or gRPC to a CA or policy server)",
  'node:tls': "Node's TLS (mTLS, a TLS admin listener, gRPC to a CA or policy server)",
  'node:crypto': "Node's crypto, OpenSSL (certificates, JWT, hashing; request ids are read from /dev/urandom)",
  'node:fs/promises': 'fs/promises with readline and the REPL history, which an ES import of node:fs loads (src/core/node-builtins.ts)',
};

type Ports = SidecarProcess['ports'];

/** Port 0 everywhere (the sidecar's 'sidecar listening' line, an info one, says what it bound); the app is gone. */
function plaintextSidecar(): Record<string, unknown> {
  return plaintextSidecarConfig('http://127.0.0.1:1', { workload: { service: 'orders', namespace: 'default' }, log: { level: 'info' } });
}

describe('what a sidecar imports', () => {
  it('a plaintext sidecar with no policy, tracing off, loads none of the optional packages, also once calls went through', async () => {
    const calls = async (ports: Ports): Promise<void> => {
      // Each gets a request id (no x-request-id sent) and an answer: the app is gone, the name unknown.
      const inbound = await request(`http://127.0.0.1:${ports.inbound}/orders`);
      await inbound.body.dump();
      expect(inbound.statusCode).toBe(503);
      const outbound = await request(`http://127.0.0.1:${ports.outbound}/x`, { headers: { host: 'nowhere' } });
      await outbound.body.dump();
      expect(outbound.statusCode).toBe(404);
    };
    const loaded = await packagesLoadedBy(plaintextSidecar(), { settled: calls });
    expect(loaded).toContain('pino'); // the recorder works: the logger is always there
    const unexpected = loaded.filter((name) => name in OPTIONAL).map((name) => `${name} (${OPTIONAL[name as keyof typeof OPTIONAL]})`);
    expect(unexpected).toEqual([]);
  });

  it('a policy loads the QuickJS sandbox only with a Filter document, the JSON Schema compiler only with a jsonSchema rule, the Redis client only with rateLimit.redis', async () => {
    const withPolicy = async (documents: Parameters<typeof writeSnapshot>[2], extra: Record<string, unknown> = {}, javascript = true): Promise<string[]> => {
      const config = plaintextSidecar();
      const stateDir = mkdtempSync(path.join(tmpdir(), 'meshgate-lazy-state-'));
      try {
        await writeSnapshot(stateDir, { service: 'orders', namespace: 'default' }, documents, [], { javascript });
        // The inbound listener opens once the disk copy is in force (its Filter compiled); it answers a call.
        const answers = (ports: Ports) =>
          eventually(() => request(`http://127.0.0.1:${ports.inbound}/`).then((res) => res.body.dump().then(() => res.statusCode)), {
            until: (s) => s > 0,
            timeoutMs: 20_000,
            what: 'the inbound listener',
          });
        return await packagesLoadedBy({ ...config, ...extra, policy: { servers: ['127.0.0.1:1'], stateDir }, authorization: { allowWhenNoPolicy: true } }, { settled: answers });
      } finally {
        rmSync(stateDir, { recursive: true, force: true });
      }
    };
    const allow = policyDoc('AuthorizationPolicy', 'all', { action: 'ALLOW', rules: [{}] }, 'default');
    const without = await withPolicy([allow]);
    expect(without).toContain('@grpc/grpc-js'); // the recorder saw the policy's own packages (the subscriber)
    expect(without).toEqual(expect.arrayContaining(['node:tls', 'node:crypto'])); // and Node's, for mTLS to the policy server
    expect(without).not.toContain('ajv'); // no JSON Schema rule, no JSON Schema compiler
    expect(without.filter((name) => name.includes('quickjs'))).toEqual([]);
    expect(without).not.toContain('ioredis');
    expect(without).not.toContain('undici'); // no JWKS or introspection URL to fetch, no HTTP/2 upstream called
    // Nothing answers on port 1: the sidecar waits its 2 s for Redis, then opens its listeners anyway.
    expect(await withPolicy([allow], { rateLimit: { redis: { url: 'redis://127.0.0.1:1' } } })).toContain('ioredis');
    const filter = policyDoc('Filter', 'own', { source: 'export default () => ({ allow: true });' }, 'default');
    const withFilter = await withPolicy([allow, filter]);
    expect(withFilter).toEqual(expect.arrayContaining(['quickjs-emscripten-core', '@jitl/quickjs-wasmfile-release-sync']));
    // The policy server sends a Filter's JavaScript: the sidecar never loads Node's TypeScript stripper ...
    expect(withFilter).not.toContain('node:internal/amaro');
    // ... which an older server's snapshot (source only) still needs.
    expect(await withPolicy([allow, filter], {}, false)).toContain('node:internal/amaro');
    const schema = policyDoc('ValidationPolicy', 'input', { rules: [{ name: 'body', jsonSchema: { type: 'object' } }] }, 'default');
    expect(await withPolicy([allow, schema])).toEqual(expect.arrayContaining(['ajv', 'ajv-formats']));
  });

  it("loads Node's HTTP/2 when the first caller speaks it, not before", async () => {
    const h2Call = async (ports: Ports): Promise<void> => {
      const session = http2.connect(`http://127.0.0.1:${ports.inbound}`);
      session.on('error', () => {});
      const stream = session.request({ ':path': '/' });
      stream.on('error', () => {});
      stream.resume();
      // The app on port 1 is down: 503 from the sidecar, over HTTP/2.
      const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
      expect(headers[':status']).toBe(503);
      session.close();
    };
    expect(await packagesLoadedBy(plaintextSidecar(), { settled: h2Call })).toContain('node:http2');
  });

  it('tracing turned on loads the SDK and its exporter, and only then', async () => {
    const loaded = await packagesLoadedBy({ ...plaintextSidecar(), telemetry: { tracing: { exporter: 'otlp-http', endpoint: 'http://127.0.0.1:1/v1/traces' } } });
    expect(loaded).toEqual(expect.arrayContaining(['@opentelemetry/sdk-trace', '@opentelemetry/exporter-trace-otlp-proto']));
  });
});
