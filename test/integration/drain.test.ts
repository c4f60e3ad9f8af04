import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, waitForLive } from '../helpers/process.ts';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';

const BIN = join(import.meta.dirname, '../../bin/meshgate.js');

describe('SIGTERM drains the sidecar', () => {
  let dir: string;
  let app: TestServer;
  const release: Array<() => void> = [];
  let arrived: () => void;
  const slowCallArrived = new Promise<void>((resolve) => (arrived = resolve));
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshgate-drain-'));
    app = await startHttpServer((req, res) => {
      if (req.url === '/slow') {
        arrived();
        release.push(() => res.end('finished'));
      } else res.end('quick');
    });
  });
  afterAll(async () => {
    release.forEach((f) => f());
    await app.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('finishes the in-flight call, refuses new connections, and exits 0', async () => {
    const [inbound, admin, outbound] = await Promise.all([freePort(), freePort(), freePort()]);
    const file = join(dir, 'sidecar.yaml');
    await writeFile(
      file,
      [
        'workload: { service: orders }',
        `listeners: { inbound: { address: 127.0.0.1, port: ${inbound} }, outbound: { port: ${outbound} }, admin: { port: ${admin} } }`,
        `inbound: { app: "${app.url}" }`,
        'drain: { timeout: 10s }',
        'mtls: { mode: DISABLE }',
        'log: { level: warn }',
      ].join('\n'),
    );
    const child = spawn(process.execPath, [BIN, 'sidecar', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = once(child, 'exit');
    try {
      await waitForLive(`http://127.0.0.1:${admin}/live`, 10_000);
      const slow = request(`http://127.0.0.1:${inbound}/slow`).then(async (r) => ({ status: r.statusCode, text: await r.body.text() }));
      await slowCallArrived;
      child.kill('SIGTERM');
      // Readiness drops and the listener stops accepting while the slow call is still open.
      await expect
        .poll(
          async () =>
            request(`http://127.0.0.1:${inbound}/quick`).then(
              () => 'accepted',
              (e: { code?: string }) => e.code,
            ),
          { timeout: 5_000 },
        )
        .toBe('ECONNREFUSED');
      release.shift()!();
      expect(await slow).toEqual({ status: 200, text: 'finished' });
      const [code] = await exited;
      expect(code).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
