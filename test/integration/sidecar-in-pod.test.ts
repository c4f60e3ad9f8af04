import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { freePort, waitForLive } from '../helpers/process.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

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
    const [admin, inbound] = [await freePort(), await freePort()];
    await writeFile(
      join(dir, 'sidecar.yaml'),
      `workload: { service: orders, namespace: shop }\ninbound: { app: "http://127.0.0.1:1" }\nmtls: { mode: DISABLE }\n` +
        `listeners: { outbound: { port: 0 }, inbound: { address: 127.0.0.1, port: ${inbound} }, admin: { port: ${admin} } }\nlog: { level: silent }\n`,
    );
    const child = spawn(process.execPath, [join(import.meta.dirname, '../../bin/meshgate.js'), 'sidecar', '--config', join(dir, 'sidecar.yaml'), '--workload-host', 'fd00::a:5'], { stdio: 'ignore' });
    try {
      await waitForLive(`http://127.0.0.1:${admin}/live`, 15_000);
      const dump = (await (await request(`http://127.0.0.1:${admin}/config_dump`)).body.json()) as { workload: { address: string } };
      expect(dump.workload.address).toBe(`[fd00::a:5]:${inbound}`);
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
