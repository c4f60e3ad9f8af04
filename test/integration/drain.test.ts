import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import { plaintextSidecarConfig, startSidecarProcess } from '../helpers/sidecar-process.ts';

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
    const sidecar = await startSidecarProcess(plaintextSidecarConfig(app.url, { workload: { service: 'orders' }, drain: { timeout: '10s' }, log: { level: 'info' } }), dir);
    const inbound = sidecar.ports.inbound;
    try {
      const slow = request(`http://127.0.0.1:${inbound}/slow`).then(async (r) => ({ status: r.statusCode, text: await r.body.text() }));
      await slowCallArrived;
      sidecar.child.kill('SIGTERM');
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
      expect(await sidecar.exited).toBe(0);
    } finally {
      sidecar.child.kill('SIGKILL');
    }
  });
});
