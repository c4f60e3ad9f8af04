import { describe, expect, it } from 'vitest';
import type { Verdict } from '../../../../src/core/verdict.ts';
import { createLocalBuckets } from '../../../../src/filters/ratelimit/local-buckets.ts';
import { createRateLimitFilter } from '../../../../src/filters/ratelimit/ratelimit-filter.ts';
import { policyItem } from '../../../../src/filters/ratelimit/ratelimit-headers.ts';
import { createRateLimitRuntime } from '../../../../src/filters/ratelimit/ratelimit-runtime.ts';
import type { PolicyDocument } from '../../../../src/policy/types.ts';
import { createPolicyValidator } from '../../../../src/policy/validate.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';
import { call, FRONTEND } from '../authz-fixtures.ts';

/*
 * The RateLimit-Policy and RateLimit fields against
 * draft-ietf-httpapi-ratelimit-headers: lists of items named by a String,
 * with Integer parameters q and w (policy), r and t (limit), a vendor-prefixed
 * burst; sent on refusals and on admitted calls, and every value is one a
 * client can rely on.
 */

const validator = createPolicyValidator();

function doc(spec: Record<string, unknown>): PolicyDocument {
  const result = validator.validate({ apiVersion: 'meshgate.dev/v1', kind: 'RateLimitPolicy', metadata: { name: 'limits', namespace: 'shop' }, spec }, { file: 'test', index: 0 });
  if (!result.ok) throw new Error(result.errors.map((e) => `${e.field}: ${e.reason}`).join('; '));
  return result.document.document;
}

function setup(spec: Record<string, unknown>, storeDown = false) {
  const clock = createFakeClock(0);
  const runtime = createRateLimitRuntime({
    local: createLocalBuckets(1000),
    clock,
    random: () => 0.5,
    ...(storeDown ? { store: { take: async () => undefined, status: () => 'reconnecting', whenReady: async () => false, close: async () => {} } } : {}),
  });
  const filter = createRateLimitFilter([doc(spec)], runtime);
  /** One call from the frontend: what the filter answered and the headers it put on an admitted call. */
  const send = async (path = '/orders/1') => {
    const c = call({ principal: FRONTEND, path });
    const verdict: Verdict = await filter.onRequest(c);
    return verdict.kind === 'respond' ? { code: verdict.code, headers: verdict.headers! } : { code: 'ok', headers: c.annotations.responseHeaders };
  };
  return { clock, send };
}

const rule = (name: string, extra: Record<string, unknown>) => ({ name, key: ['source.principal'], ...extra });

// RFC 9651 List of Items: a String, then Integer parameters whose keys start lower-case (a vendor prefix allowed).
const SF_ITEM = String.raw`"[A-Za-z0-9._-]+"(;[a-z*][a-z0-9_.*-]*=\d+)+`;
const SF_LIST = new RegExp(`^${SF_ITEM}(, ${SF_ITEM})*$`);

describe('RateLimit header fields', () => {
  it('RateLimit-Policy names the quota of a whole-second window and the burst when the bucket is not that deep', () => {
    expect(policyItem('per-caller', { requests: 100, per: 1000 }, 10)).toBe('"per-caller";q=100;w=1;meshgate-burst=10');
    expect(policyItem('hourly', { requests: 3, per: 3_600_000 }, 3)).toBe('"hourly";q=3;w=3600');
    // Not a whole-second period: the smallest whole-second window, and what the rule admits in it, rounded down.
    expect(policyItem('half', { requests: 50, per: 500 }, 50)).toBe('"half";q=100;w=1;meshgate-burst=50');
    expect(policyItem('slow', { requests: 1, per: 1500 }, 1)).toBe('"slow";q=1;w=2');
    for (const item of ['"per-caller";q=100;w=1;meshgate-burst=10', '"hourly";q=3;w=3600']) expect(item).toMatch(SF_LIST);
  });

  it('admitted calls carry r (calls the bucket admits now) and, for a slow bucket, t (seconds until it admits more); the refusal r=0 and t=Retry-After', async () => {
    const { send } = setup({ rules: [rule('per-caller', { limit: { requests: 100, per: '1s' }, burst: 10 })] });
    const answers = [];
    for (let i = 0; i < 11; i++) answers.push(await send());
    expect(answers[0]).toEqual({ code: 'ok', headers: { 'ratelimit-policy': '"per-caller";q=100;w=1;meshgate-burst=10', ratelimit: '"per-caller";r=9' } });
    // The bucket empties: a client sees r fall before it is refused.
    expect(answers.slice(0, 10).map((a) => a.headers!.ratelimit)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0].map((r) => `"per-caller";r=${r}`));
    expect(answers[10]).toEqual({ code: 'ratelimit.exceeded', headers: { 'retry-after': '1', 'ratelimit-policy': '"per-caller";q=100;w=1;meshgate-burst=10', ratelimit: '"per-caller";r=0;t=1' } });

    const hourly = setup({ rules: [rule('hourly', { limit: { requests: 3, per: '1h' } })] });
    const first = await hourly.send();
    expect(first.headers).toEqual({ 'ratelimit-policy': '"hourly";q=3;w=3600', ratelimit: '"hourly";r=2;t=1200' });
    hourly.clock.advance(200_000);
    // 2 left, of which none comes back before the first one taken does, 1000 s from now.
    expect((await hourly.send()).headers!.ratelimit).toBe('"hourly";r=1;t=1000');
    expect((await hourly.send()).headers!.ratelimit).toBe('"hourly";r=0;t=1000');
    const refused = await hourly.send();
    expect(refused).toMatchObject({ code: 'ratelimit.exceeded', headers: { 'retry-after': '1000', ratelimit: '"hourly";r=0;t=1000' } });
    for (const a of [...answers, first, refused]) for (const value of Object.values(a.headers!).filter((v) => v.startsWith('"'))) expect(value).toMatch(SF_LIST);
  });

  it('lists every rule that counted the call; responseHeaders: refusals keeps a rule off admitted calls, none off every call; shadow rules are never listed', async () => {
    const { send } = setup({
      rules: [
        rule('burst', { limit: { requests: 5, per: '1s' } }),
        rule('quiet', { limit: { requests: 100, per: '1m' }, responseHeaders: 'refusals' }),
        rule('hidden', { limit: { requests: 2, per: '1h' }, responseHeaders: 'none' }),
      ],
    });
    expect(await send()).toEqual({ code: 'ok', headers: { 'ratelimit-policy': '"burst";q=5;w=1', ratelimit: '"burst";r=4' } });
    expect((await send()).code).toBe('ok');
    // hidden refuses: the refusal lists the rules that may be shown, hidden's own retry-after still counts.
    expect(await send()).toEqual({
      code: 'ratelimit.exceeded',
      headers: { 'retry-after': '1800', 'ratelimit-policy': '"burst";q=5;w=1, "quiet";q=100;w=60', ratelimit: '"burst";r=2, "quiet";r=97' },
    });

    const shadow = setup({ mode: 'shadow', rules: [rule('trial', { limit: { requests: 1, per: '1h' } })] });
    expect(await shadow.send()).toEqual({ code: 'ok', headers: undefined });
    expect(await shadow.send()).toEqual({ code: 'ok', headers: undefined });
  });

  it('the 503 of a store outage (failureMode deny) names the rule and says nothing is admitted for now', async () => {
    const { send } = setup({ rules: [rule('shared', { limit: { requests: 100, per: '1s' }, burst: 10, scope: 'global' })] }, true);
    expect(await send()).toEqual({
      code: 'ratelimit.unavailable',
      headers: { 'retry-after': '1', 'ratelimit-policy': '"shared";q=100;w=1;meshgate-burst=10', ratelimit: '"shared";r=0;t=1' },
    });
  });
});
