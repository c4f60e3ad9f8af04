import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { freePort } from '../helpers/process.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { plaintextSidecarConfig, startSidecarProcess } from '../helpers/sidecar-process.ts';

/*
 * What an injected pod needs from the sidecar: a readiness without the app for
 * its startup probe (the app starts only after it passes), and its pod IP as
 * the address peers dial (known only when the pod runs: --workload-host $(POD_IP)).
 */

describe('the sidecar in a pod', () => {
  it('/ready?skip=app is 200 while the app is not up yet; /ready still waits for it', async () => {
    const sc = await startTestSidecar({ inbound: { app: `http://127.0.0.1:${await freePort()}` } });
    try {
      const startup = await request(`${sc.adminUrl}/ready?skip=app`);
      expect(startup.statusCode).toBe(200);
      expect(await startup.body.json()).toMatchObject({ ready: true, checks: { app: 'skipped', listeners: 'ok' } });
      const full = await request(`${sc.adminUrl}/ready`);
      expect(full.statusCode).toBe(503);
      await full.body.dump();
    } finally {
      await sc.drain(200);
    }
  });

  it('meshgate sidecar --workload-host advertises HOST:<inbound port> (IPv6 in brackets)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshgate-pod-'));
    try {
      // The one port fixed up front: --workload-host refuses port 0 (the address is made before the listener binds).
      const inbound = await freePort();
      const config = plaintextSidecarConfig('http://127.0.0.1:1', { log: { level: 'info' } });
      const listeners = { ...(config.listeners as Record<string, unknown>), inbound: { address: '127.0.0.1', port: inbound } };
      const sidecar = await startSidecarProcess({ ...config, listeners }, dir, 30_000, { args: ['--workload-host', 'fd00::a:5'] });
      try {
        const dump = (await (await request(`${sidecar.adminUrl}/config_dump`)).body.json()) as { workload: { address: string } };
        expect(dump.workload.address).toBe(`[fd00::a:5]:${sidecar.ports.inbound}`);
      } finally {
        sidecar.child.kill('SIGTERM');
        await sidecar.exited;
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
