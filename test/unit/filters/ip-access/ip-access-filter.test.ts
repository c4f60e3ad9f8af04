import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../../../src/core/call-context.ts';
import type { Verdict } from '../../../../src/core/verdict.ts';
import { createBanList } from '../../../../src/filters/ip-access/ban-list.ts';
import { createIPAccessFilter } from '../../../../src/filters/ip-access/ip-access-filter.ts';
import type { PolicyDocument } from '../../../../src/policy/types.ts';
import { createPolicyValidator } from '../../../../src/policy/validate.ts';
import { callContext } from '../../../helpers/call-context.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';
import { ipAccessRuntime } from '../../../helpers/filter-runtimes.ts';

const model = createPolicyValidator();

/** An IPAccessPolicy as the sidecar receives it: validated, defaults filled in. */
function policy(name: string, spec: Record<string, unknown>): PolicyDocument {
  const result = model.validate({ apiVersion: 'meshgate.dev/v1', kind: 'IPAccessPolicy', metadata: { name, namespace: 'shop' }, spec }, { file: 'test', index: 0 });
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.document.document;
}

const call = (address: string, xff?: string): CallContext =>
  callContext({ id: 'r1', path: '/', headers: xff === undefined ? {} : { 'x-forwarded-for': xff }, source: { address, port: 1234, principal: undefined } });

const outcome = (v: Verdict | Promise<Verdict>): string => {
  if (v instanceof Promise) throw new Error('ip-access must answer synchronously');
  return v.kind === 'continue' ? 'allow' : `${v.code} ${v.rule ?? ''}`.trim();
};

const denyTen = policy('deny-ten', { deny: ['10.0.0.0/8', '2001:db8:bad::/48'] });
const allowOffice = policy('office', { allow: ['192.0.2.0/24', '2001:db8::/32'] });
const allowButNotGuests = policy('office-no-guests', { allow: ['192.0.2.0/24'], deny: ['192.0.2.128/25'] });
const behindLb = policy('behind-lb', { allow: ['198.51.100.0/24'], trustedProxies: ['10.0.0.0/8'] });

describe('ip-access filter: allow and deny lists', () => {
  const cases: Array<[string, PolicyDocument[], [string, string?], string]> = [
    ['no IPAccessPolicy: everyone', [], ['10.1.2.3'], 'allow'],
    ['deny list refuses a v4 address', [denyTen], ['10.1.2.3'], 'ip.denied shop/deny-ten#deny'],
    ['deny list refuses a mapped v4 address', [denyTen], ['::ffff:10.1.2.3'], 'ip.denied shop/deny-ten#deny'],
    ['deny list refuses a v6 address', [denyTen], ['2001:db8:bad::1'], 'ip.denied shop/deny-ten#deny'],
    ['deny list lets others through', [denyTen], ['192.0.2.1'], 'allow'],
    ['deny list lets other v6 through', [denyTen], ['2001:db8:600d::1'], 'allow'],
    ['allow list admits its members', [allowOffice], ['192.0.2.10'], 'allow'],
    ['allow list admits v6 members', [allowOffice], ['2001:db8::10'], 'allow'],
    ['allow list admits mapped members', [allowOffice], ['::ffff:192.0.2.10'], 'allow'],
    ['allow list refuses everyone else', [allowOffice], ['203.0.113.1'], 'ip.denied shop/office#allow'],
    ['deny beats allow', [allowButNotGuests], ['192.0.2.200'], 'ip.denied shop/office-no-guests#deny'],
    ['allow still applies beside deny', [allowButNotGuests], ['192.0.2.10'], 'allow'],
    ['every document must pass: the second refuses', [allowOffice, denyTen], ['2001:db8:bad::1'], 'ip.denied shop/deny-ten#deny'],
    ['two allow lists: a member of only one is refused', [allowOffice, allowButNotGuests], ['2001:db8::10'], 'ip.denied shop/office-no-guests#allow'],
    ['trusted proxy: decided on the forwarded client', [behindLb], ['10.0.0.2', '198.51.100.7'], 'allow'],
    ['trusted proxy: forwarded client outside the allow list', [behindLb], ['10.0.0.2', '203.0.113.1'], 'ip.denied shop/behind-lb#allow'],
    ['trusted proxy: a spoofed leftmost entry does not help', [behindLb], ['10.0.0.2', '198.51.100.7, 203.0.113.1'], 'ip.denied shop/behind-lb#allow'],
    ['untrusted peer: its x-forwarded-for is ignored', [behindLb], ['203.0.113.1', '198.51.100.7'], 'ip.denied shop/behind-lb#allow'],
    ['trusted proxy forwarding garbage: refused', [behindLb], ['10.0.0.2', '198.51.100.7, garbage'], 'ip.denied shop/behind-lb#trustedProxies'],
    ["another document's trusted proxies do not apply", [behindLb, denyTen], ['10.0.0.2', '198.51.100.7'], 'ip.denied shop/deny-ten#deny'],
  ];
  for (const [name, docs, [address, xff], expected] of cases) {
    it(name, () => {
      expect(outcome(createIPAccessFilter(docs, ipAccessRuntime()).onRequest(call(address, xff)))).toBe(expected);
    });
  }

  it('the deny body names the address the sidecar saw', () => {
    const verdict = createIPAccessFilter([behindLb], ipAccessRuntime()).onRequest(call('10.0.0.2', '203.0.113.1'));
    expect(verdict).toMatchObject({ kind: 'respond', code: 'ip.denied', reason: 'address 203.0.113.1 is not allowed' });
  });
});

describe('ip-access filter: auto-ban', () => {
  const banPolicy = policy('ban', { trustedProxies: ['10.0.0.0/8'], autoBan: { threshold: 2, window: '1m', duration: '10m' } });

  it('refuses a banned client with ip.banned and retry-after until the ban ends', () => {
    const clock = createFakeClock();
    const bans = createBanList({ clock });
    const filter = createIPAccessFilter([banPolicy], { banList: bans });
    const c = call('10.0.0.2', '198.51.100.7');
    expect(outcome(filter.onRequest(c))).toBe('allow');
    bans.recordDenial(c, 'authz.denied');
    bans.recordDenial(c, 'authz.denied');
    const verdict = filter.onRequest(c);
    expect(verdict).toMatchObject({ kind: 'respond', code: 'ip.banned', rule: 'shop/ban#autoBan', headers: { 'retry-after': '600' } });
    // The proxy itself and other clients behind it are not banned.
    expect(outcome(filter.onRequest(call('10.0.0.2')))).toBe('allow');
    expect(outcome(filter.onRequest(call('10.0.0.2', '198.51.100.8')))).toBe('allow');
    clock.advance(599_500);
    expect(filter.onRequest(c)).toMatchObject({ code: 'ip.banned', headers: { 'retry-after': '1' } });
    clock.advance(500);
    expect(outcome(filter.onRequest(c))).toBe('allow');
  });

  it('bans survive a new chain for the next snapshot; a snapshot without autoBan lifts them', () => {
    const bans = createBanList({ clock: createFakeClock() });
    const first = createIPAccessFilter([banPolicy], { banList: bans });
    const c = call('198.51.100.7');
    bans.recordDenial(c, 'authz.denied');
    bans.recordDenial(c, 'authz.denied');
    expect(outcome(first.onRequest(c))).toBe('ip.banned shop/ban#autoBan');
    const second = createIPAccessFilter([banPolicy, denyTen], { banList: bans });
    expect(outcome(second.onRequest(c))).toBe('ip.banned shop/ban#autoBan');
    const third = createIPAccessFilter([denyTen], { banList: bans });
    expect(bans.enabled).toBe(false);
    expect(outcome(third.onRequest(c))).toBe('allow');
  });

  it('the list decides before the ban: a denied address keeps ip.denied', () => {
    const bans = createBanList({ clock: createFakeClock() });
    const filter = createIPAccessFilter([banPolicy, denyTen], { banList: bans });
    expect(outcome(filter.onRequest(call('10.9.9.9')))).toBe('ip.denied shop/deny-ten#deny');
  });

  it('several documents with autoBan: the strictest setting', () => {
    const bans = createBanList({ clock: createFakeClock() });
    createIPAccessFilter(
      [policy('a', { autoBan: { threshold: 5, window: '10s', duration: '1m', maxEntries: 10 } }), policy('b', { autoBan: { threshold: 2, window: '5s', duration: '5m', maxEntries: 5 } })],
      { banList: bans },
    );
    const c = call('198.51.100.7');
    bans.recordDenial(c, 'authz.denied');
    bans.recordDenial(c, 'authz.denied');
    expect(bans.list()).toMatchObject([{ address: '198.51.100.7', count: 2 }]);
    expect(Date.parse(bans.list()[0]!.until) - 1_000_000).toBe(300_000);
  });
});
