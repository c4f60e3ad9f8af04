import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../../../src/core/call-context.ts';
import type { Filter } from '../../../../src/core/filter.ts';
import type { Verdict } from '../../../../src/core/verdict.ts';
import type { BucketShape, TakeResult } from '../../../../src/filters/ratelimit/gcra.ts';
import { takeToken } from '../../../../src/filters/ratelimit/gcra.ts';
import { createLocalBuckets } from '../../../../src/filters/ratelimit/local-buckets.ts';
import { createRateLimitFilter } from '../../../../src/filters/ratelimit/ratelimit-filter.ts';
import { createRateLimitRuntime } from '../../../../src/filters/ratelimit/ratelimit-runtime.ts';
import type { RateLimitStore } from '../../../../src/filters/ratelimit/redis-store.ts';
import type { PolicyDocument } from '../../../../src/policy/types.ts';
import { createPolicyValidator } from '../../../../src/policy/validate.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';
import { ADMIN, call, FRONTEND } from '../authz-fixtures.ts';

const validator = createPolicyValidator();

function rateLimitPolicy(name: string, spec: Record<string, unknown>): PolicyDocument {
  const result = validator.validate({ apiVersion: 'meshgate.dev/v1', kind: 'RateLimitPolicy', metadata: { name, namespace: 'shop' }, spec }, { file: 'test', index: 0 });
  if (!result.ok) throw new Error(result.errors.map((e) => `${e.field}: ${e.reason}`).join('; '));
  return result.document.document;
}

/** A Redis stand-in with the real bucket math; `down` makes it answer undefined like a timed-out Redis. */
function fakeStore(clock: { monotonic(): number }) {
  const tats = new Map<string, number>();
  const keys: string[] = [];
  const store: RateLimitStore & { down: boolean; keys: string[] } = {
    down: false,
    keys,
    async take(key: string, shape: BucketShape): Promise<TakeResult | undefined> {
      keys.push(key);
      if (store.down) return undefined;
      const r = takeToken(tats.get(key), clock.monotonic(), shape);
      tats.set(key, r.tat);
      return r;
    },
    status: () => (store.down ? 'reconnecting' : 'ready'),
    whenReady: async () => !store.down,
    close: async () => {},
  };
  return store;
}

function setup(withStore = false, workers = 1) {
  const clock = createFakeClock(0);
  const counts: Record<string, number> = {};
  const shadow: string[] = [];
  const logs: { fields: Record<string, unknown>; message: string }[] = [];
  const store = withStore ? fakeStore(clock) : undefined;
  const runtime = createRateLimitRuntime({
    local: createLocalBuckets(10_000),
    store,
    clock,
    random: () => 0.5,
    metrics: {
      rateLimitDecisions: { inc: ({ policy, rule, decision }) => void (counts[`${policy}#${rule}:${decision}`] = (counts[`${policy}#${rule}:${decision}`] ?? 0) + 1) },
      shadowDenials: { inc: ({ policy, rule }) => void shadow.push(`${policy}#${rule}`) },
    },
    logger: { info: (fields, message) => void logs.push({ fields: fields as Record<string, unknown>, message }) },
    workers,
  });
  return { clock, counts, shadow, logs, store, runtime };
}

async function codes(filter: Filter, calls: CallContext[]): Promise<string[]> {
  const out: string[] = [];
  for (const c of calls) {
    const v: Verdict = await filter.onRequest(c);
    out.push(v.kind === 'continue' ? 'ok' : v.code);
  }
  return out;
}

const perCaller = (extra: Record<string, unknown> = {}) => ({
  rules: [{ name: 'per-caller', key: ['source.principal'], limit: { requests: 2, per: '1s' }, ...extra }],
});

describe('rate-limit filter', () => {
  it('gives each caller its own bucket and refuses with 429 details once it is empty', async () => {
    const { runtime, counts } = setup();
    const filter = createRateLimitFilter([rateLimitPolicy('limits', perCaller())], runtime);
    expect(await codes(filter, [call({ principal: FRONTEND }), call({ principal: FRONTEND }), call({ principal: ADMIN })])).toEqual(['ok', 'ok', 'ok']);
    const c = call({ principal: FRONTEND });
    const verdict = filter.onRequest(c);
    expect(verdict).toMatchObject({
      kind: 'respond',
      code: 'ratelimit.exceeded',
      rule: 'shop/limits#per-caller',
      headers: { 'retry-after': '1', 'ratelimit-policy': '"per-caller";q=2;w=1', ratelimit: '"per-caller";r=0;t=1' },
    });
    expect((verdict as { decisionId?: string }).decisionId).toMatch(/^[0-9a-z]{12}$/);
    expect(c.annotations.rateLimit).toBe('limited');
    expect(counts).toEqual({ 'shop/limits#per-caller:allowed': 3, 'shop/limits#per-caller:limited': 1 });
  });

  it('with several worker processes, each admits its share of a local limit, so the pod never admits more than the rule', async () => {
    // 4 calls a second for the pod, burst 4: each of 2 workers (own buckets) holds 2, refilled every 500 ms.
    const [one, two] = [setup(false, 2), setup(false, 2)];
    const rule = perCaller({ limit: { requests: 4, per: '1s' } });
    const filters = [createRateLimitFilter([rateLimitPolicy('limits', rule)], one.runtime), createRateLimitFilter([rateLimitPolicy('limits', rule)], two.runtime)];
    const frontend = () => call({ principal: FRONTEND });
    for (const filter of filters) expect(await codes(filter, [frontend(), frontend(), frontend()])).toEqual(['ok', 'ok', 'ratelimit.exceeded']);
    one.clock.advance(250);
    expect(await codes(filters[0]!, [frontend()])).toEqual(['ratelimit.exceeded']);
    one.clock.advance(250);
    expect(await codes(filters[0]!, [frontend(), frontend()])).toEqual(['ok', 'ratelimit.exceeded']);
  });

  it('answers synchronously for local rules (no promise on the hot path)', () => {
    const { runtime } = setup();
    const filter = createRateLimitFilter([rateLimitPolicy('limits', perCaller())], runtime);
    expect(filter.onRequest(call({ principal: FRONTEND }))).toEqual({ kind: 'continue' });
  });

  it('refills with time: the caller is admitted again after retry-after', async () => {
    const { runtime, clock } = setup();
    const filter = createRateLimitFilter([rateLimitPolicy('limits', perCaller())], runtime);
    const frontend = () => call({ principal: FRONTEND });
    expect(await codes(filter, [frontend(), frontend(), frontend()])).toEqual(['ok', 'ok', 'ratelimit.exceeded']);
    clock.advance(500);
    expect(await codes(filter, [frontend(), frontend()])).toEqual(['ok', 'ratelimit.exceeded']);
  });

  it('only counts calls its match selects', async () => {
    const { runtime } = setup();
    const filter = createRateLimitFilter([rateLimitPolicy('limits', perCaller({ match: { paths: ['/orders/*'], methods: ['POST'] } }))], runtime);
    const post = (path: string) => call({ principal: FRONTEND, method: 'POST', path });
    expect(await codes(filter, [call({ principal: FRONTEND }), call({ principal: FRONTEND }), call({ principal: FRONTEND })])).toEqual(['ok', 'ok', 'ok']);
    expect(await codes(filter, [post('/orders/1'), post('/orders/2;x=1'), post('/other'), post('/orders/3')])).toEqual(['ok', 'ok', 'ok', 'ratelimit.exceeded']);
  });

  it('with many rules (looked up by method and path), every matching rule counts and the first empty one names the refusal', async () => {
    const { runtime, counts } = setup();
    // Twelve rules: more than a scan handles, so the filter looks them up in its index.
    const rules = [
      ...Array.from({ length: 10 }, (_, i) => ({ name: `other-${i}`, key: ['source.principal'], limit: { requests: 1, per: '1m' }, match: { paths: [`/other-${i}/*`] } })),
      { name: 'orders-post', key: ['source.principal'], limit: { requests: 1, per: '1m' }, match: { paths: ['/orders/*'], methods: ['POST'] } },
      { name: 'everything', key: ['source.principal'], limit: { requests: 1, per: '1m' } },
    ];
    const filter = createRateLimitFilter([rateLimitPolicy('limits', { rules })], runtime);
    const post = () => call({ principal: FRONTEND, method: 'POST', path: '/orders/1' });
    expect(await codes(filter, [post()])).toEqual(['ok']);
    const refused = await filter.onRequest(post());
    expect(refused).toMatchObject({ code: 'ratelimit.exceeded', rule: 'shop/limits#orders-post' });
    expect(counts).toEqual({ 'shop/limits#orders-post:allowed': 1, 'shop/limits#everything:allowed': 1, 'shop/limits#orders-post:limited': 1, 'shop/limits#everything:limited': 1 });
  });

  it.each([
    ['source.ip', (i: number) => call({ address: i < 2 ? '10.0.0.1' : '::ffff:10.0.0.1' }), (i: number) => call({ address: `10.0.0.${i + 2}` })],
    ['header:x-api-key', () => call({ headers: { 'x-api-key': 'k1' } }), (i: number) => call({ headers: { 'x-api-key': `other-${i}` } })],
    ['claim:tenant', () => call({ jwt: { principal: 'https://idp/alice', claims: { tenant: 'acme' } } }), (i: number) => call({ jwt: { principal: 'https://idp/bob', claims: { tenant: `t${i}` } } })],
  ])('keys buckets by %s', async (key, same, different) => {
    const { runtime } = setup();
    const filter = createRateLimitFilter([rateLimitPolicy('limits', { rules: [{ name: 'r', key: [key], limit: { requests: 2, per: '1m' } }] })], runtime);
    expect(await codes(filter, [same(0), same(1), same(2)])).toEqual(['ok', 'ok', 'ratelimit.exceeded']);
    expect(await codes(filter, [different(0), different(1), different(2)])).toEqual(['ok', 'ok', 'ok']);
  });

  it('keys source.ip by x-forwarded-for only through trustedProxies: a load balancer does not make every client one bucket, a caller cannot pick its own', async () => {
    const { runtime } = setup();
    const filter = createRateLimitFilter(
      [rateLimitPolicy('edge', { trustedProxies: ['10.0.0.0/8'], rules: [{ name: 'per-client', key: ['source.ip'], limit: { requests: 1, per: '1m' } }] })],
      runtime,
    );
    const viaLb = (client: string) => call({ address: '10.1.2.3', headers: { 'x-forwarded-for': client } });
    expect(await codes(filter, [viaLb('198.51.100.1'), viaLb('198.51.100.2'), viaLb('198.51.100.1')])).toEqual(['ok', 'ok', 'ratelimit.exceeded']);
    // Not through a trusted proxy: the header is the caller's own words and is ignored.
    const direct = (claimed: string) => call({ address: '203.0.113.7', headers: { 'x-forwarded-for': claimed } });
    expect(await codes(filter, [direct('198.51.100.3'), direct('198.51.100.4')])).toEqual(['ok', 'ratelimit.exceeded']);
    // A trusted proxy forwarding garbage: those callers share one bucket rather than get one each.
    expect(await codes(filter, [viaLb('not-an-ip'), viaLb('still-not')])).toEqual(['ok', 'ratelimit.exceeded']);
  });

  it('reads claims only from a verified token: a header named like the claim is no key, and callers without it share one bucket', async () => {
    const { runtime } = setup();
    const filter = createRateLimitFilter([rateLimitPolicy('limits', { rules: [{ name: 'r', key: ['claim:tenant'], limit: { requests: 2, per: '1m' } }] })], runtime);
    const forged = (i: number) => call({ headers: { tenant: `t${i}`, 'claim:tenant': `t${i}` } });
    expect(await codes(filter, [forged(1), forged(2), forged(3)])).toEqual(['ok', 'ok', 'ratelimit.exceeded']);
  });

  it('combines key parts: one bucket per principal and path header', async () => {
    const { runtime } = setup();
    const filter = createRateLimitFilter([rateLimitPolicy('limits', { rules: [{ name: 'r', key: ['source.principal', 'header:x-tenant'], limit: { requests: 1, per: '1m' } }] })], runtime);
    const c = (principal: string, tenant: string) => call({ principal, headers: { 'x-tenant': tenant } });
    expect(await codes(filter, [c(FRONTEND, 'a'), c(FRONTEND, 'b'), c(ADMIN, 'a'), c(FRONTEND, 'a')])).toEqual(['ok', 'ok', 'ok', 'ratelimit.exceeded']);
  });

  it('shadow mode: never refuses, counts and logs the would-be refusals', async () => {
    const { runtime, shadow, counts, logs } = setup();
    const filter = createRateLimitFilter([rateLimitPolicy('trial', { mode: 'shadow', ...perCaller() })], runtime);
    const calls = [0, 1, 2, 3].map(() => call({ principal: FRONTEND }));
    expect(await codes(filter, calls)).toEqual(['ok', 'ok', 'ok', 'ok']);
    expect(shadow).toEqual(['shop/trial#per-caller', 'shop/trial#per-caller']);
    expect(calls[3]!.annotations).toMatchObject({ rateLimit: 'shadow_limited', shadowDenials: ['shop/trial#per-caller'] });
    expect(counts['shop/trial#per-caller:shadow_limited']).toBe(2);
    // Throttled: one line per rule per second, not one per call.
    expect(logs.filter((l) => l.message === 'rate limit: shadow rule would refuse')).toHaveLength(1);
  });

  it('keeps counting across snapshots: a new filter over the same runtime does not refill buckets, a changed limit starts new ones', async () => {
    const { runtime } = setup();
    const first = createRateLimitFilter([rateLimitPolicy('limits', perCaller())], runtime);
    expect(await codes(first, [call({ principal: FRONTEND }), call({ principal: FRONTEND })])).toEqual(['ok', 'ok']);
    const same = createRateLimitFilter([rateLimitPolicy('limits', perCaller())], runtime);
    expect(await codes(same, [call({ principal: FRONTEND })])).toEqual(['ratelimit.exceeded']);
    const raised = createRateLimitFilter([rateLimitPolicy('limits', { rules: [{ name: 'per-caller', key: ['source.principal'], limit: { requests: 5, per: '1s' } }] })], runtime);
    expect(await codes(raised, [call({ principal: FRONTEND })])).toEqual(['ok']);
  });

  it('with several rules, each takes a token and the first empty enforcing bucket refuses', async () => {
    const { runtime } = setup();
    const filter = createRateLimitFilter(
      [
        rateLimitPolicy('limits', {
          rules: [
            { name: 'per-caller', key: ['source.principal'], limit: { requests: 3, per: '1m' } },
            { name: 'writes', key: ['source.principal'], match: { methods: ['POST'] }, limit: { requests: 1, per: '1m' } },
          ],
        }),
      ],
      runtime,
    );
    const post = () => call({ principal: FRONTEND, method: 'POST' });
    const v1 = await filter.onRequest(post());
    const v2 = await filter.onRequest(post());
    expect(v1.kind).toBe('continue');
    expect(v2).toMatchObject({ code: 'ratelimit.exceeded', rule: 'shop/limits#writes' });
    expect(await codes(filter, [call({ principal: FRONTEND }), call({ principal: FRONTEND })])).toEqual(['ok', 'ratelimit.exceeded']);
  });

  describe('scope: global', () => {
    const global = (extra: Record<string, unknown> = {}) => ({ rules: [{ name: 'shared', key: ['source.principal'], limit: { requests: 2, per: '1s' }, scope: 'global', ...extra }] });

    it('counts in the store under the rule and a hash of the key, never the raw value', async () => {
      const { runtime, store } = setup(true);
      const filter = createRateLimitFilter([rateLimitPolicy('limits', global())], runtime);
      expect(await codes(filter, [call({ principal: FRONTEND }), call({ principal: FRONTEND }), call({ principal: FRONTEND })])).toEqual(['ok', 'ok', 'ratelimit.exceeded']);
      expect(store!.keys[0]).toMatch(/^shop\/limits#shared@500000\/2:[A-Za-z0-9_-]{32}$/);
      expect(store!.keys.join()).not.toContain('frontend');
    });

    it.each([
      [undefined, 'ratelimit.unavailable', 'unavailable_denied'],
      ['deny', 'ratelimit.unavailable', 'unavailable_denied'],
      ['allow', 'ok', 'unavailable_allowed'],
    ])('store down, failureMode %s: %s', async (failureMode, code, decision) => {
      const { runtime, store, counts } = setup(true);
      store!.down = true;
      const filter = createRateLimitFilter([rateLimitPolicy('limits', global(failureMode ? { failureMode } : {}))], runtime);
      const c = call({ principal: FRONTEND });
      const verdict = await filter.onRequest(c);
      expect(verdict.kind === 'continue' ? 'ok' : verdict.code).toBe(code);
      if (verdict.kind === 'respond') expect(verdict).toMatchObject({ rule: 'shop/limits#shared', headers: { 'retry-after': '1' } });
      expect(counts[`shop/limits#shared:${decision}`]).toBe(1);
    });

    it('store down, failureMode local: the same limit counted in this sidecar', async () => {
      const { runtime, store, counts } = setup(true);
      store!.down = true;
      const filter = createRateLimitFilter([rateLimitPolicy('limits', global({ failureMode: 'local' }))], runtime);
      expect(await codes(filter, [call({ principal: FRONTEND }), call({ principal: FRONTEND }), call({ principal: FRONTEND })])).toEqual(['ok', 'ok', 'ratelimit.exceeded']);
      expect(counts).toEqual({ 'shop/limits#shared:fallback_allowed': 2, 'shop/limits#shared:fallback_limited': 1 });
    });

    it('store down, failureMode local with several workers: each counts its share of the limit', async () => {
      const { runtime, store } = setup(true, 2);
      store!.down = true;
      const filter = createRateLimitFilter([rateLimitPolicy('limits', global({ failureMode: 'local' }))], runtime);
      expect(await codes(filter, [call({ principal: FRONTEND }), call({ principal: FRONTEND })])).toEqual(['ok', 'ratelimit.exceeded']);
    });

    it('no Redis configured: fails closed by default', async () => {
      const { runtime } = setup(false);
      const filter = createRateLimitFilter([rateLimitPolicy('limits', global())], runtime);
      expect(await codes(filter, [call({ principal: FRONTEND })])).toEqual(['ratelimit.unavailable']);
    });

    it('does not ask the store when a local rule refused already', async () => {
      const { runtime, store } = setup(true);
      const filter = createRateLimitFilter(
        [
          rateLimitPolicy('limits', {
            rules: [
              { name: 'local', key: ['source.principal'], limit: { requests: 1, per: '1m' } },
              { name: 'shared', key: ['source.principal'], limit: { requests: 100, per: '1m' }, scope: 'global' },
            ],
          }),
        ],
        runtime,
      );
      expect(await codes(filter, [call({ principal: FRONTEND }), call({ principal: FRONTEND }), call({ principal: FRONTEND })])).toEqual(['ok', 'ratelimit.exceeded', 'ratelimit.exceeded']);
      expect(store!.keys).toHaveLength(1);
    });
  });
});

describe('RateLimitPolicy validation', () => {
  it.each([
    [{ rules: [{ name: 'r', key: ['source.principal'], limit: { requests: 1, per: '1s' }, failureMode: 'allow' }] }, 'spec.rules[0].failureMode', 'only applies to scope: global'],
    [{ rules: [{ name: 'r', key: ['source.port'], limit: { requests: 1, per: '1s' } }] }, 'spec.rules[0].key[0]', 'expected source.principal'],
    [{ rules: [{ name: 'r', key: ['source.ip'], limit: { requests: 5000, per: '1ms' } }] }, 'spec.rules[0].limit.requests', 'at most 1000 requests per millisecond'],
  ])('refuses %j at %s', (spec, field, reason) => {
    const result = validator.validate({ apiVersion: 'meshgate.dev/v1', kind: 'RateLimitPolicy', metadata: { name: 'x', namespace: 'shop' }, spec }, { file: 'f.yaml', index: 0 });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors.map((e) => `${e.field}: ${e.reason}`).join('\n')).toContain(`${field}: ${reason}`);
  });
});
