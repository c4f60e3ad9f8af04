import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { Verdict } from '../../../src/core/verdict.ts';
import { createUserFilterRuntime } from '../../../src/filters/user-filter/user-filter.ts';
import { buildInboundChain, createInboundRuntimes } from '../../../src/inbound/inbound-chain.ts';
import { callContext } from '../../helpers/call-context.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';
import { filterDocument } from '../../helpers/filter-docs.ts';

function metrics() {
  const registry = new Registry();
  return {
    registry,
    userFilterDecisions: new Counter({ name: 'ufd', help: 'h', labelNames: ['policy', 'decision', 'code'], registers: [registry] }),
    shadowDenials: new Counter({ name: 'sd', help: 'h', labelNames: ['policy', 'rule'], registers: [registry] }),
  };
}

async function counted(m: ReturnType<typeof metrics>, labels: Record<string, string>): Promise<number> {
  const values = (await m.userFilterDecisions.get()).values;
  return values.filter((v) => Object.entries(labels).every(([k, x]) => (v.labels as Record<string, unknown>)[k] === x)).reduce((n, v) => n + v.value, 0);
}

async function stage(spec: Record<string, unknown>, deps: { metrics?: ReturnType<typeof metrics>; logger?: { info(f: object): void; warn(f: object): void; error(f: object): void } } = {}) {
  const runtime = createUserFilterRuntime({ clock: createFakeClock(), random: () => 0.5, ...deps });
  const doc = filterDocument(spec);
  await runtime.prepare([doc]);
  const filter = runtime.compile([doc])[(spec.stage as 'after-authz' | undefined) ?? 'after-authz'];
  if (!filter) throw new Error('no filter at the stage');
  return { runtime, filter };
}

const TENANT = `export default function check(call: { path: string; headers: Record<string, string> }) {
  const tenant = call.path.split('/')[2];
  if (call.headers['x-tenant'] === tenant) return { allow: true, headers: { set: { 'x-tenant-checked': tenant } } };
  return { deny: { code: 'tenant_mismatch', reason: 'wrong tenant' } };
}`;

describe('checks of your own in the chain', () => {
  it('denies with filter.denied naming the document and the check code, and counts it', async () => {
    const m = metrics();
    const { filter } = await stage({ source: TENANT }, { metrics: m });
    const call = callContext({ path: '/t/acme/orders', headers: { 'x-tenant': 'other' } });
    const verdict = filter.onRequest(call) as Verdict;
    expect(verdict).toMatchObject({ kind: 'respond', code: 'filter.denied', reason: 'wrong tenant', rule: 'shop/check#tenant_mismatch' });
    expect(call.annotations).toMatchObject({ decision: 'deny', rule: 'shop/check#tenant_mismatch' });
    expect(await counted(m, { policy: 'shop/check', decision: 'deny', code: 'tenant_mismatch' })).toBe(1);
  });

  it('answers a deny with the status the check chose (a 4xx), and fails a check that asks for another', async () => {
    const { filter } = await stage({ source: `export default (call: { path: string }) => ({ deny: { status: call.path === '/bad' ? 503 : 429, code: 'slow_down' } });` });
    expect(filter.onRequest(callContext({ path: '/x' }))).toMatchObject({ kind: 'respond', code: 'filter.denied', status: 429, rule: 'shop/check#slow_down' });
    // A 5xx would tell the caller's sidecar that this endpoint failed: not a check's to say.
    expect(filter.onRequest(callContext({ path: '/bad' }))).toMatchObject({ kind: 'respond', code: 'filter.user_check_failed' });
    const { filter: plain } = await stage({ source: TENANT });
    expect(plain.onRequest(callContext({ path: '/t/acme/x' }))).not.toHaveProperty('status'); // filter.denied's own 403
  });

  it('lets an allowed call through with its header edits for the app', async () => {
    const m = metrics();
    const { filter } = await stage({ source: TENANT }, { metrics: m });
    const call = callContext({ path: '/t/acme/orders', headers: { 'x-tenant': 'acme' } });
    expect((filter.onRequest(call) as Verdict).kind).toBe('continue');
    expect(call.annotations.upstreamEdits?.setHeaders).toEqual({ 'x-tenant-checked': 'acme' });
    expect(await counted(m, { decision: 'edit' })).toBe(1);
  });

  it('refuses a header edit a check may not make (framing headers), as a failure of the check', async () => {
    const { filter } = await stage({ source: `export default () => ({ headers: { set: { 'content-length': '0' } } });` });
    expect(filter.onRequest(callContext())).toMatchObject({ code: 'filter.user_check_failed' });
  });

  it('gives a check that throws its failure mode: deny (503 filter.user_check_failed) by default, allow when the document says so', async () => {
    const m = metrics();
    const warned: unknown[] = [];
    const logger = {
      info() {},
      warn: (fields: object) => {
        warned.push(fields);
      },
      error() {},
    };
    const deny = await stage({ source: `export default () => { throw new Error('boom'); }` }, { metrics: m, logger });
    expect(deny.filter.onRequest(callContext())).toMatchObject({ code: 'filter.user_check_failed', rule: 'shop/check' });
    expect(warned[0]).toMatchObject({ policy: 'shop/check', failure: 'threw', error: 'Error: boom' });
    const allow = await stage({ source: `export default () => { throw new Error('boom'); }`, failureMode: 'allow' }, { metrics: m });
    expect((allow.filter.onRequest(callContext()) as Verdict).kind).toBe('continue');
    expect(await counted(m, { decision: 'failed_deny', code: 'threw' })).toBe(1);
    expect(await counted(m, { decision: 'failed_allow', code: 'threw' })).toBe(1);
  });

  it('contains an infinite loop within its budget and fails it', async () => {
    const { filter } = await stage({ source: 'export default () => { for (;;) {} }', budget: { cpuMs: 20 } });
    const started = performance.now();
    expect(filter.onRequest(callContext())).toMatchObject({ code: 'filter.user_check_failed' });
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('in shadow mode records what it would deny and lets the call through', async () => {
    const m = metrics();
    const { filter } = await stage({ source: TENANT, mode: 'shadow' }, { metrics: m });
    const call = callContext({ path: '/t/acme/x', headers: {} });
    expect((filter.onRequest(call) as Verdict).kind).toBe('continue');
    expect(call.annotations.shadowDenials).toEqual(['shop/check#tenant_mismatch']);
    expect(call.annotations.upstreamEdits).toBeUndefined();
    expect(await counted(m, { decision: 'shadow_deny', code: 'tenant_mismatch' })).toBe(1);
  });

  it('sees the verified claims of the call', async () => {
    const { filter } = await stage({ source: `export default (call) => call.auth && call.auth.claims.tenant === 'acme' ? { allow: true } : { deny: { code: 'no_claim' } };` });
    const auth = { principal: 'iss/sub', issuer: 'iss', subject: 'sub', claims: { tenant: 'acme' } };
    expect((filter.onRequest(callContext({ annotations: { retries: 0, auth } })) as Verdict).kind).toBe('continue');
    expect(filter.onRequest(callContext())).toMatchObject({ code: 'filter.denied', rule: 'shop/check#no_claim' });
  });

  it('fails closed when the program was never compiled on this sidecar', async () => {
    const runtime = createUserFilterRuntime({ clock: createFakeClock(), random: () => 0.5 });
    const filter = runtime.compile([filterDocument({ source: 'export default () => ({ allow: true })' })])['after-authz']!;
    expect(filter.onRequest(callContext())).toMatchObject({ code: 'filter.user_check_failed' });
  });

  it('a second snapshot that needs a version still compiling waits for that compile', async () => {
    const runtime = createUserFilterRuntime({ clock: createFakeClock(), random: () => 0.5 });
    const doc = filterDocument({ source: 'export default () => ({ deny: { code: "compiled" } })' });
    const first = runtime.prepare([doc]);
    const second = runtime.prepare([doc]);
    expect(second).toBeDefined();
    await second;
    expect(runtime.compile([doc])['after-authz']!.onRequest(callContext())).toMatchObject({ rule: 'shop/check#compiled' });
    await first;
    expect(runtime.programs()).toBe(1);
    expect(runtime.prepare([doc])).toBeUndefined();
  });

  it('places each stage in the inbound chain, and adds nothing without a Filter document', async () => {
    const runtimes = createInboundRuntimes({ clock: createFakeClock(), random: () => 0.5, allowWhenNoAuthzPolicy: true });
    expect(buildInboundChain([], { onNoPolicy: 'deny', runtimes }).map((f) => f.name)).toEqual(['ip-access', 'authn', 'authz', 'ratelimit', 'validate']);
    const docs = [
      filterDocument({ source: 'export default () => ({ allow: true })', stage: 'after-authn' }, { name: 'a' }),
      filterDocument({ source: 'export default () => ({ allow: true })', stage: 'before-validate' }, { name: 'b' }),
    ];
    await runtimes.userFilters.prepare(docs);
    expect(buildInboundChain(docs, { onNoPolicy: 'deny', runtimes }).map((f) => f.name)).toEqual([
      'ip-access',
      'authn',
      'user-filter:after-authn',
      'authz',
      'ratelimit',
      'user-filter:before-validate',
      'validate',
    ]);
  });

  it('keeps a program while a chain that uses it lives, and disposes it once the chain is gone and a new version replaced it', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const runtime = createUserFilterRuntime({ clock: createFakeClock(), random: () => 0.5 });
    const v1 = filterDocument({ source: 'export default () => ({ deny: { code: "v1" } })' });
    const v2 = filterDocument({ source: 'export default () => ({ deny: { code: "v2" } })' });
    await runtime.prepare([v1]);
    let old: ReturnType<typeof runtime.compile> | undefined = runtime.compile([v1]);
    await runtime.prepare([v2]);
    const next = runtime.compile([v2]);
    expect(runtime.programs()).toBe(2);
    // A call that started on the old chain finishes on v1.
    expect(old['after-authz']!.onRequest(callContext())).toMatchObject({ rule: 'shop/check#v1' });
    expect(next['after-authz']!.onRequest(callContext())).toMatchObject({ rule: 'shop/check#v2' });
    old = undefined;
    for (let i = 0; i < 20 && runtime.programs() > 1; i++) {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(runtime.programs()).toBe(1);
    expect(next['after-authz']!.onRequest(callContext())).toMatchObject({ rule: 'shop/check#v2' });
  });
});
