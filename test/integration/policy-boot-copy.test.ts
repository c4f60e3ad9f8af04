import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { policyDoc, writeSnapshot } from '../helpers/static-policy.ts';

describe('the persisted policy snapshot at boot', () => {
  let stateDir: string;
  let app: TestServer;
  let sc: TestSidecar;
  beforeAll(async () => {
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-boot-copy-'));
    await writeSnapshot(stateDir, { service: 'orders' }, [policyDoc('AuthorizationPolicy', 'deny-admin', { action: 'DENY', rules: [{ name: 'admin', to: [{ paths: ['/admin*'] }] }] })]);
    app = await startHttpServer(echoHandler('app'));
    // No policy server answers: the disk copy is all there is.
    sc = await startTestSidecar({
      workload: { service: 'orders', namespace: 'shop' },
      inbound: { app: app.url },
      policy: { servers: ['127.0.0.1:1'], stateDir },
      authorization: { allowWhenNoPolicy: true },
    });
  });
  afterAll(async () => {
    await sc?.drain(100);
    await app?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('is installed once, before the listeners open, and enforced', async () => {
    expect(sc.logs.filter((l) => l.msg === 'policy in force')).toEqual([expect.objectContaining({ source: 'disk' })]);
    const denied = await request(`${sc.inboundUrl}/admin/x`, { headers: { host: 'orders.shop' } });
    await denied.body.dump();
    expect(denied.statusCode).toBe(403);
    const allowed = await request(`${sc.inboundUrl}/orders/1`, { headers: { host: 'orders.shop' } });
    await allowed.body.dump();
    expect(allowed.statusCode).toBe(200);
  });
});
