import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import type { SidecarProcess } from '../helpers/sidecar-process.ts';
import { plaintextSidecarConfig, startSidecarProcess } from '../helpers/sidecar-process.ts';

/*
 * What an idle sidecar costs a fleet: every pod has one, and most wait most of
 * the time. Once it has served a call (its access log, pools and metrics are
 * up), a waiting sidecar wakes its event loop only for the timers it needs:
 * not the 100 times a second of prom-client's default event-loop sampling
 * (nodejs_eventloop_lag_*), nor every 100 ms for a log with nothing to write.
 */

/** Times the process's main thread went to sleep and was woken again (Linux). */
async function mainThreadWakeups(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/task/${pid}/status`, 'utf8');
  return Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(status)![1]);
}

describe.skipIf(process.platform !== 'linux')('an idle sidecar', () => {
  let dir: string;
  let app: TestServer;
  let sidecar: SidecarProcess;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-idle-'));
    app = await startHttpServer((_req, res) => res.end('ok'));
    sidecar = await startSidecarProcess(plaintextSidecarConfig(app.url, { log: { level: 'info', accessLog: true } }), dir);
  });

  afterAll(async () => {
    sidecar?.child.kill('SIGKILL');
    await app?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('wakes its event loop a few times a second, not a hundred, and still reports event-loop lag', async () => {
    const call = await fetch(`http://127.0.0.1:${sidecar.ports.inbound}/orders`);
    expect(call.status).toBe(200);
    const metrics = await (await fetch(`${sidecar.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/^nodejs_eventloop_lag_p99_seconds \d/m);

    const pid = sidecar.child.pid!;
    const windowMs = 2_000;
    const before = await mainThreadWakeups(pid);
    await delay(windowMs); // the measurement is a rate over time: there is no event to await
    const perSecond = ((await mainThreadWakeups(pid)) - before) / (windowMs / 1000);
    // ~10 a second for event-loop sampling, a few for timers that guard connections; 100+ before.
    expect(perSecond).toBeLessThan(40);
  });
});
