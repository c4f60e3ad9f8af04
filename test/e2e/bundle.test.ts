import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { beforeAll, describe, expect, it } from 'vitest';
import { packagesLoadedBy } from '../helpers/load-record.ts';
import { startOtlpReceiver } from '../helpers/otlp-receiver.ts';
import { plaintextSidecarConfig } from '../helpers/sidecar-process.ts';

/*
 * The container image runs the bundle (scripts/build.ts), not the sources:
 * this runs the whole mesh through it, so a bundling mistake (a file read
 * relative to a module, the policy parser's worker, a chunk that does not
 * load) fails here and not in a cluster. `npm test` builds it first; run
 * alone, the test builds it when a source is newer than the bundle.
 */

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const BUNDLE = path.join(ROOT, 'dist/meshgate/main.js');
const BIN = path.join(ROOT, 'bin/meshgate.js');

function newestSource(dir: string): number {
  return Math.max(
    ...readdirSync(dir, { withFileTypes: true }).map((entry) => {
      const full = path.join(dir, entry.name);
      return entry.isDirectory() ? newestSource(full) : statSync(full).mtimeMs;
    }),
  );
}

function bundleIsCurrent(): boolean {
  try {
    return statSync(BUNDLE).mtimeMs >= newestSource(path.join(ROOT, 'src'));
  } catch {
    return false;
  }
}

beforeAll(async () => {
  if (!bundleIsCurrent()) await run(process.execPath, [path.join(ROOT, 'scripts/build.ts')], { cwd: ROOT });
}, 120_000);

describe('the bundle', () => {
  it('holds every chunk as Latin-1 text, which V8 keeps at one byte per character (a wider one doubles the chunk in memory)', () => {
    const chunks = readdirSync(path.dirname(BUNDLE)).filter((name) => name.endsWith('.js'));
    expect(chunks.length).toBeGreaterThan(10);
    const wide = chunks.filter((name) => /[^\u0000-\u00ff]/u.test(readFileSync(path.join(path.dirname(BUNDLE), name), 'utf8')));
    expect(wide).toEqual([]);
  });

  it('runs the whole mesh: CA, policy server, sidecars over mTLS, policy enforced', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'demo', '--calls', '1'], { cwd: ROOT, env: { ...process.env, MESHGATE_BUNDLE: '1' }, timeout: 60_000 });
    expect(stdout).toMatch(/frontend -> orders\s+GET\s+\/orders\/42\s+200 .*caller=spiffe:\/\/cluster\.local\/ns\/default\/sa\/frontend/);
    expect(stdout).toMatch(/plaintext caller -> orders inbound directly \(no certificate\): refused/);
  });

  it('answers a missing config file like the sources do: one line, exit code 2', async () => {
    const attempt = (env: Record<string, string>) =>
      run(process.execPath, [BIN, 'sidecar', '--config', '/nonexistent/sidecar.yaml'], { env: { ...process.env, ...env } }).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
      );
    const bundled = await attempt({ MESHGATE_BUNDLE: '1' });
    expect(bundled).toEqual({ code: 2, stderr: '/nonexistent/sidecar.yaml: cannot read file (no such file)\n' });
    expect(await attempt({ MESHGATE_BUNDLE: '0' })).toEqual(bundled);
  });

  it("exports spans over OTLP/HTTP without loading Node's own undici (scripts/build.ts hands the exporter node:http as process.getBuiltinModule does)", async () => {
    const receiver = await startOtlpReceiver();
    try {
      const config = plaintextSidecarConfig('http://127.0.0.1:1', {
        log: { level: 'info' },
        telemetry: { tracing: { exporter: 'otlp-http', endpoint: receiver.httpUrl, batch: { scheduledDelay: '10ms' } } },
      });
      const traceOneCall = async (ports: { readonly inbound: number }): Promise<void> => {
        const res = await request(`http://127.0.0.1:${ports.inbound}/orders`);
        await res.body.dump();
        expect(res.statusCode).toBe(503); // the app is gone; the call is traced all the same
        await receiver.waitFor((spans) => spans.length > 0, 10_000);
      };
      const loaded = await packagesLoadedBy(config, { settled: traceOneCall, env: { MESHGATE_BUNDLE: '1' } });
      expect(loaded).toContain('node:crypto'); // the recorder's exit hook ran (trace ids come from node:crypto)
      expect(loaded).not.toContain('node:internal/undici');
    } finally {
      await receiver.close();
    }
  }, 40_000);
});
