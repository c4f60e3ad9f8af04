import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestCa } from '../helpers/ca-fixture.ts';
import { startTestCa } from '../helpers/ca-fixture.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import type { PolicyHarness, TestPolicyServer } from './policy-server-harness.ts';
import { createPolicyHarness } from './policy-server-harness.ts';

/* One admin listener for every role: the same refusals, whichever role a script or probe talks to. */

let sidecar: TestSidecar;
let ca: TestCa;
let h: PolicyHarness;
let ps: TestPolicyServer;
const admins: Record<string, string> = {};

beforeAll(async () => {
  // The app is never called: only the admin listener is.
  sidecar = await startTestSidecar({ inbound: { app: 'http://127.0.0.1:9' }, log: { level: 'warn', accessLog: false } });
  ca = await startTestCa();
  h = await createPolicyHarness();
  ps = await h.start({ log: { level: 'warn' } });
  admins.sidecar = sidecar.adminUrl;
  admins.ca = `http://127.0.0.1:${ca.ca.adminPort}`;
  admins['policy-server'] = `http://127.0.0.1:${ps.server.adminPort}`;
}, 60_000);

afterAll(async () => {
  await sidecar?.drain(100);
  await ca?.close();
  await h?.close();
});

async function call(base: string, method: string, path: string) {
  const res = await request(`${base}${path}`, { method });
  return { status: res.statusCode, allow: res.headers.allow, reason: res.headers['x-meshgate-reason'], type: res.headers['content-type'], body: (await res.body.json()) as unknown };
}

describe('the admin listener of every role', () => {
  it('answers an unknown method on a known path with the same 405: Allow, x-meshgate-reason and {code, reason}', async () => {
    const answers = await Promise.all(Object.entries(admins).map(async ([role, base]) => [role, await call(base, 'POST', '/ready')] as const));
    const expected = {
      status: 405,
      allow: 'GET, HEAD',
      reason: 'admin.method_not_allowed',
      type: 'application/json',
      body: { code: 'admin.method_not_allowed', reason: 'POST not allowed on /ready' },
    };
    expect(Object.fromEntries(answers)).toEqual({ sidecar: expected, ca: expected, 'policy-server': expected });
  });

  it('answers an unknown path with the same 404 {code, reason}', async () => {
    const answers = await Promise.all(Object.entries(admins).map(async ([role, base]) => [role, await call(base, 'GET', '/nothing')] as const));
    const expected = { status: 404, allow: undefined, reason: 'admin.not_found', type: 'application/json', body: { code: 'admin.not_found', reason: 'no admin path /nothing' } };
    expect(Object.fromEntries(answers)).toEqual({ sidecar: expected, ca: expected, 'policy-server': expected });
  });

  it('keeps the admin API behind authentication (401 before its routing) and /live on every role', async () => {
    // Unauthenticated callers learn nothing of the API's paths: 401 before routing.
    expect((await call(admins['policy-server']!, 'POST', '/api/v1/documents')).status).toBe(401);
    for (const base of Object.values(admins)) expect((await request(`${base}/live`)).statusCode).toBe(200);
  });
});
