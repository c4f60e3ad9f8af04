import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { startAppAndSidecar } from '../helpers/app-sidecar.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { policyDoc } from '../helpers/static-policy.ts';

describe('the persisted policy snapshot at boot', () => {
  let pair: AppAndSidecar;
  let sc: TestSidecar;
  beforeAll(async () => {
    // No policy server answers: the disk copy is all there is.
    pair = await startAppAndSidecar({ policy: [policyDoc('AuthorizationPolicy', 'deny-admin', { action: 'DENY', rules: [{ name: 'admin', to: [{ paths: ['/admin*'] }] }] })] });
    ({ sc } = pair);
  });
  afterAll(async () => {
    await pair?.close();
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
