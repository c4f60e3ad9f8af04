import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../../src/core/call-context.ts';
import { runFilters } from '../../../src/core/filter.ts';
import { buildInboundChain, createInboundRuntimes } from '../../../src/inbound/inbound-chain.ts';
import { callContext } from '../../helpers/call-context.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';
import { policyDoc } from '../../helpers/static-policy.ts';

/*
 * The inbound chain for one snapshot: which filters, in which order, and what
 * a sidecar with no usable policy admits. The filters themselves are tested
 * next to their code (test/unit/filters).
 */

const call = (over: Partial<CallContext> = {}): CallContext =>
  callContext({ authority: 'orders.shop', source: { address: '10.0.0.5', port: 1234, principal: 'spiffe://cluster.local/ns/shop/sa/frontend' }, ...over });

const runtimes = (allowWhenNoAuthzPolicy = false) => createInboundRuntimes({ clock: createFakeClock(), random: () => 0.5, allowWhenNoAuthzPolicy });

const allowFrontend = policyDoc('AuthorizationPolicy', 'allow-frontend', { action: 'ALLOW', rules: [{ name: 'frontend', from: [{ principals: ['spiffe://cluster.local/ns/shop/sa/frontend'] }] }] });
const blockNet = policyDoc('IPAccessPolicy', 'block', { deny: ['10.0.0.0/24'] });
const oneCall = policyDoc('RateLimitPolicy', 'one-call', { rules: [{ name: 'one', match: { paths: ['/orders/*'] }, key: ['source.ip'], limit: { requests: 1, per: '1m' } }] });

describe('buildInboundChain', () => {
  it('runs ip-access, authn, authz, rate limit and validate, in that order', () => {
    expect(buildInboundChain([], { onNoPolicy: 'deny', runtimes: runtimes() }).map((f) => f.name)).toEqual(['ip-access', 'authn', 'authz', 'ratelimit', 'validate']);
  });

  it('admits nothing without a snapshot when onNoPolicy is deny, and everything when it is allow', async () => {
    const denying = await runFilters(buildInboundChain(undefined, { onNoPolicy: 'deny', runtimes: runtimes() }), call());
    expect(denying).toMatchObject({ kind: 'respond', code: 'policy.unavailable' });
    expect(buildInboundChain(undefined, { onNoPolicy: 'allow', runtimes: runtimes() })).toEqual([]);
  });

  it('admits nothing while an enforcing document the server sent could not be applied, whatever the rest allows', async () => {
    const verdict = await runFilters(buildInboundChain([allowFrontend], { onNoPolicy: 'allow', runtimes: runtimes(true) }, ['AuthorizationPolicy/shop/deny-admin']), call());
    expect(verdict).toMatchObject({ kind: 'respond', code: 'policy.unavailable' });
    expect(verdict.kind === 'respond' && verdict.reason).toContain('AuthorizationPolicy/shop/deny-admin');
  });

  it('refuses at the cheapest check first: a blocked address is ip.denied before authorization is asked', async () => {
    const verdict = await runFilters(buildInboundChain([blockNet], { onNoPolicy: 'deny', runtimes: runtimes() }), call());
    expect(verdict).toMatchObject({ kind: 'respond', code: 'ip.denied' });
  });

  it('spends no rate-limit budget on a call authorization denies', async () => {
    const chain = buildInboundChain([allowFrontend, oneCall], { onNoPolicy: 'deny', runtimes: runtimes() });
    const stranger = call({ source: { address: '10.0.1.5', port: 1, principal: 'spiffe://cluster.local/ns/shop/sa/stranger' } });
    expect(await runFilters(chain, stranger)).toMatchObject({ kind: 'respond', code: 'authz.denied' });
    // Same address, now an allowed caller: its one call a minute is still there.
    const allowed = call({ source: { address: '10.0.1.5', port: 2, principal: 'spiffe://cluster.local/ns/shop/sa/frontend' } });
    expect(await runFilters(chain, allowed)).toMatchObject({ kind: 'continue' });
    expect(await runFilters(chain, allowed)).toMatchObject({ kind: 'respond', code: 'ratelimit.exceeded' });
  });
});
