import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../../../src/core/call-context.ts';
import type { ResponseCacheEvents, ResponsePlan } from '../../../../src/filters/response/response-plan.ts';
import { compileResponseFilter, createResponseRuntime, responsePlanOf } from '../../../../src/filters/response/response-plan.ts';
import type { CacheSlot } from '../../../../src/filters/response/response-serve.ts';
import { createResponseTap, lookupCache } from '../../../../src/filters/response/response-serve.ts';
import { callContext } from '../../../helpers/call-context.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';
import { policyDoc } from '../../../helpers/static-policy.ts';

/*
 * The response filter and the cache's per-call steps without a listener: which
 * rule covers a call, when a call may be answered from the cache (never with
 * another caller's answer), what the tap keeps and what it refuses.
 */

const ORDERS = { service: 'orders', namespace: 'shop' };

function setup(responses: unknown[], opts: { maxCacheBytes?: number } = {}) {
  const clock = createFakeClock(Date.parse('2026-06-01T12:00:00Z'));
  const counted: string[] = [];
  const events: ResponseCacheEvents = {
    lookup: (rule, result, reason) => counted.push(`lookup ${rule} ${result} ${reason}`.trim()),
    store: (rule, result, reason) => counted.push(`store ${rule} ${result} ${reason}`.trim()),
    evicted: () => counted.push('evicted'),
    resized: () => {},
  };
  const runtime = createResponseRuntime({ clock, random: Math.random, workload: ORDERS, maxCacheBytes: opts.maxCacheBytes ?? 1 << 20, events });
  const filter = compileResponseFilter([policyDoc('Route', 'orders', { service: 'orders', responses })], runtime);
  const planFor = (call: CallContext): ResponsePlan | undefined => {
    void filter?.onRequest(call);
    return responsePlanOf(call);
  };
  return { clock, counted, runtime, filter, planFor };
}

/** One call through the cache as the inbound stack runs it: lookup, then on a miss the app's answer through the tap. */
function callThrough(planFor: (c: CallContext) => ResponsePlan | undefined, call: CallContext, app: { status?: number; headers?: Record<string, string>; body: string }) {
  const plan = planFor(call)!;
  const found = lookupCache(plan, call, call.path);
  if (found.kind === 'hit') return { from: 'cache', body: found.response.body.toString(), age: found.ageSeconds, log: call.annotations.cache };
  const tap = createResponseTap(plan, call, found.slot);
  const headers = { 'cache-control': 'max-age=60', ...app.headers };
  expect(tap?.head(app.status ?? 200, headers)).toBeUndefined();
  expect(tap?.data(Buffer.from(app.body))).toBeUndefined();
  tap?.end('whole');
  return { from: 'app', body: app.body, age: undefined, log: call.annotations.cache };
}

/** The slot a missed lookup gives for `call`. */
function slotOf(plan: ResponsePlan, call: CallContext): CacheSlot | undefined {
  const found = lookupCache(plan, call, call.path);
  return found.kind === 'miss' ? found.slot : undefined;
}

const get = (path: string, over: Partial<CallContext> = {}) => callContext({ path, authority: 'orders.shop', ...over, annotations: { retries: 0, ...over.annotations } });

describe('response filter', () => {
  it('is left out of the chain when no Route has responses for this workload', () => {
    const clock = createFakeClock();
    const runtime = createResponseRuntime({ clock, random: Math.random, workload: ORDERS, maxCacheBytes: 1000 });
    expect(compileResponseFilter([policyDoc('Route', 'orders', { service: 'orders' })], runtime)).toBeUndefined();
    // Another service's responses are that service's sidecar's business.
    expect(compileResponseFilter([policyDoc('Route', 'users', { service: 'users', responses: [{ name: 'c', cache: {} }] })], runtime)).toBeUndefined();
  });

  it('puts the first matching rule on the call, and nothing on a call no rule matches', () => {
    const { planFor } = setup([
      { name: 'images', match: { paths: ['/images/*'], methods: ['GET'] }, cache: {} },
      { name: 'all', match: { paths: ['/images/*', '/api/*'] }, hardening: {} },
    ]);
    expect(planFor(get('/images/a.png'))?.rule).toBe('shop/orders#images');
    expect(planFor(get('/images/a.png', { method: 'POST' }))?.rule).toBe('shop/orders#all');
    expect(planFor(get('/api/x'))?.rule).toBe('shop/orders#all');
    expect(planFor(get('/other'))).toBeUndefined();
  });
});

describe('response cache per call', () => {
  it('answers the second call from the cache, its age growing with the clock', () => {
    const { planFor, clock, counted } = setup([{ name: 'c', cache: {} }]);
    expect(callThrough(planFor, get('/a'), { body: 'one' })).toMatchObject({ from: 'app', log: 'miss' });
    clock.advance(3_000);
    expect(callThrough(planFor, get('/a'), { body: 'two' })).toEqual({ from: 'cache', body: 'one', age: 3, log: 'hit' });
    clock.advance(57_000);
    expect(callThrough(planFor, get('/a'), { body: 'three' })).toMatchObject({ from: 'app', body: 'three' });
    expect(counted.filter((c) => c.startsWith('lookup'))).toEqual(['lookup shop/orders#c miss', 'lookup shop/orders#c hit', 'lookup shop/orders#c miss']);
  });

  it.each([
    ['an Authorization header', { headers: { authorization: 'Bearer a' } }],
    ['a cookie', { headers: { cookie: 'session=a' } }],
    ['a verified request principal (a token in the query)', { annotations: { retries: 0, auth: { principal: 'idp/alice', issuer: 'idp', subject: 'alice', claims: {} } } }],
  ])('bypasses the cache for a call with %s: neither served nor stored', (_name, over) => {
    const { planFor, counted } = setup([{ name: 'c', cache: {} }]);
    expect(callThrough(planFor, get('/a', over), { body: 'alice' })).toMatchObject({ from: 'app', log: 'bypass:authenticated' });
    // Nothing was stored: an anonymous caller reaches the app.
    expect(callThrough(planFor, get('/a'), { body: 'anyone' })).toMatchObject({ from: 'app' });
    expect(counted).toContain('lookup shop/orders#c bypass authenticated');
  });

  it("with cacheAuthenticated, never serves one caller's answer to another (principal, credential, anonymous)", () => {
    const { planFor } = setup([{ name: 'c', cache: { cacheAuthenticated: true } }]);
    const alice = { annotations: { retries: 0, auth: { principal: 'idp/alice', issuer: 'idp', subject: 'alice', claims: {} } }, headers: { authorization: 'Bearer token-1' } };
    const aliceOtherToken = { annotations: { retries: 0, auth: { principal: 'idp/alice', issuer: 'idp', subject: 'alice', claims: {} } }, headers: { authorization: 'Bearer token-2' } };
    const bob = { annotations: { retries: 0, auth: { principal: 'idp/bob', issuer: 'idp', subject: 'bob', claims: {} } }, headers: { authorization: 'Bearer token-3' } };
    const carol = { headers: { authorization: 'Basic Y2Fyb2w6eA==' } };
    const dave = { headers: { authorization: 'Basic ZGF2ZTp4' } };
    expect(callThrough(planFor, get('/me', alice), { body: 'alice' }).from).toBe('app');
    expect(callThrough(planFor, get('/me', bob), { body: 'bob' })).toMatchObject({ from: 'app', body: 'bob' });
    expect(callThrough(planFor, get('/me', carol), { body: 'carol' })).toMatchObject({ from: 'app', body: 'carol' });
    expect(callThrough(planFor, get('/me', dave), { body: 'dave' })).toMatchObject({ from: 'app', body: 'dave' });
    expect(callThrough(planFor, get('/me'), { body: 'anonymous' })).toMatchObject({ from: 'app', body: 'anonymous' });
    expect(callThrough(planFor, get('/me', aliceOtherToken), { body: 'x' })).toMatchObject({ from: 'cache', body: 'alice' });
    expect(callThrough(planFor, get('/me', bob), { body: 'x' })).toMatchObject({ from: 'cache', body: 'bob' });
    expect(callThrough(planFor, get('/me', carol), { body: 'x' })).toMatchObject({ from: 'cache', body: 'carol' });
    expect(callThrough(planFor, get('/me', dave), { body: 'x' })).toMatchObject({ from: 'cache', body: 'dave' });
    expect(callThrough(planFor, get('/me'), { body: 'x' })).toMatchObject({ from: 'cache', body: 'anonymous' });
  });

  it('keeps the answers to different mesh peers apart', () => {
    const { planFor } = setup([{ name: 'c', cache: {} }]);
    const peer = (principal: string) => ({ source: { address: '10.0.0.5', port: 1, principal } });
    callThrough(planFor, get('/a', peer('spiffe://td/ns/shop/sa/frontend')), { body: 'frontend' });
    expect(callThrough(planFor, get('/a', peer('spiffe://td/ns/shop/sa/admin')), { body: 'admin' })).toMatchObject({ from: 'app' });
    expect(callThrough(planFor, get('/a', peer('spiffe://td/ns/shop/sa/frontend')), { body: 'x' })).toMatchObject({ from: 'cache', body: 'frontend' });
  });

  it('keys by authority, path and query', () => {
    const { planFor } = setup([{ name: 'c', cache: {} }]);
    callThrough(planFor, get('/a'), { body: 'a' });
    expect(callThrough(planFor, get('/a', { authority: 'other.shop' }), { body: 'other' }).from).toBe('app');
    expect(callThrough(planFor, get('/a', { authority: 'ORDERS.shop' }), { body: 'x' })).toMatchObject({ from: 'cache', body: 'a' });
    const plan = planFor(get('/a'))!;
    expect(lookupCache(plan, get('/a'), '/a?x=1').kind).toBe('miss');
  });

  it('relays but does not keep a body over maxEntryBytes, a HEAD answer, or one with trailers', () => {
    const { planFor, counted } = setup([{ name: 'c', cache: { maxEntryBytes: 8 } }]);
    const big = get('/big');
    const tap = createResponseTap(planFor(big)!, big, slotOf(planFor(big)!, big))!;
    expect(tap.head(200, { 'cache-control': 'max-age=60' })).toBeUndefined();
    expect(tap.data(Buffer.from('123456'))).toBeUndefined();
    expect(tap.data(Buffer.from('789'))).toBeUndefined(); // over 8 bytes: still relayed, no longer kept
    tap.end('whole');
    expect(callThrough(planFor, get('/big'), { body: 'fresh' }).from).toBe('app');
    expect(callThrough(planFor, get('/head', { method: 'HEAD' }), { body: '' }).from).toBe('app');
    expect(callThrough(planFor, get('/head', { method: 'HEAD' }), { body: '' }).from).toBe('app');
    const t = get('/trailers');
    const tt = createResponseTap(planFor(t)!, t, slotOf(planFor(t)!, t))!;
    tt.head(200, { 'cache-control': 'max-age=60' });
    tt.data(Buffer.from('x'));
    tt.end('trailers');
    expect(callThrough(planFor, get('/trailers'), { body: 'y' }).from).toBe('app');
    expect(counted).toEqual(expect.arrayContaining(['store shop/orders#c skipped too_large', 'store shop/orders#c skipped head', 'store shop/orders#c skipped trailers']));
  });

  it('holds at most limits.maxResponseCache in copies of answers still streaming, and gives the bytes back however a call ends', () => {
    const { planFor, runtime, counted } = setup([{ name: 'c', cache: {} }], { maxCacheBytes: 1000 });
    const start = (path: string) => {
      const call = get(path);
      const tap = createResponseTap(planFor(call)!, call, slotOf(planFor(call)!, call))!;
      tap.head(200, { 'cache-control': 'max-age=60' });
      return tap;
    };
    const a = start('/a');
    const b = start('/b');
    expect(a.data(Buffer.alloc(600))).toBeUndefined();
    expect(b.data(Buffer.alloc(600))).toBeUndefined(); // relayed all the same, but not copied: 1200 > 1000
    expect(counted).toContain('store shop/orders#c skipped copy_budget');
    expect(runtime.copies.bytes).toBe(600);
    a.end('failed'); // the upstream reset: nothing stored, the budget back
    expect(runtime.copies.bytes).toBe(0);
    b.end('whole');
    const c = start('/c');
    c.data(Buffer.alloc(10));
    c.end('whole');
    expect(runtime.copies.bytes).toBe(0);
    expect(callThrough(planFor, get('/c'), { body: 'x' }).from).toBe('cache');
    expect(callThrough(planFor, get('/a'), { body: 'x' }).from).toBe('app');
  });

  it('bypasses when limits.maxResponseCache is 0', () => {
    const { planFor } = setup([{ name: 'c', cache: {} }], { maxCacheBytes: 0 });
    callThrough(planFor, get('/a'), { body: 'a' });
    expect(callThrough(planFor, get('/a'), { body: 'b' })).toMatchObject({ from: 'app', log: 'bypass:disabled' });
  });
});

describe('response size cap', () => {
  it('refuses a Content-Length over the cap up front, and a body that grows past it', () => {
    const { planFor } = setup([{ name: 'h', hardening: { maxResponseBytes: 10 } }]);
    const call = get('/x');
    const plan = planFor(call)!;
    expect(createResponseTap(plan, call, undefined)!.head(200, { 'content-length': '11' })).toBe('response.too_large');
    expect(createResponseTap(plan, call, undefined)!.head(200, { 'content-length': '10' })).toBeUndefined();
    // A HEAD's Content-Length describes a body it does not send.
    const head = get('/x', { method: 'HEAD' });
    expect(createResponseTap(planFor(head)!, head, undefined)!.head(200, { 'content-length': '11' })).toBeUndefined();
    const streaming = createResponseTap(plan, call, undefined)!;
    expect(streaming.head(200, {})).toBeUndefined();
    expect(streaming.data(Buffer.alloc(6))).toBeUndefined();
    expect(streaming.data(Buffer.alloc(4))).toBeUndefined();
    expect(streaming.data(Buffer.alloc(1))).toBe('response.too_large');
  });

  it('has no tap at all for a rule with neither a cap nor a cache', () => {
    const { planFor } = setup([{ name: 'h', hardening: { stripHeaders: ['x-a'] } }]);
    const call = get('/x');
    expect(createResponseTap(planFor(call)!, call, undefined)).toBeUndefined();
  });
});
