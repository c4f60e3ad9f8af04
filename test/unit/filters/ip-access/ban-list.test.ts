import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../../../src/core/call-context.ts';
import type { ReasonCode } from '../../../../src/core/reason-codes.ts';
import type { AutoBanSettings, BanView } from '../../../../src/filters/ip-access/ban-list.ts';
import { createBanList } from '../../../../src/filters/ip-access/ban-list.ts';
import { parseIp } from '../../../../src/proxy/client-address.ts';
import { callContext } from '../../../helpers/call-context.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';

const call = (address: string): CallContext => callContext({ id: 'r1', path: '/', source: { address, port: 1234, principal: undefined } });

const SETTINGS: AutoBanSettings = { threshold: 3, window: 60_000, duration: 600_000, maxEntries: 100 };

function setup(settings: Partial<AutoBanSettings> = {}) {
  const clock = createFakeClock();
  const log: string[] = [];
  const banned: BanView[] = [];
  const list = createBanList({
    clock,
    events: {
      banned: (b) => banned.push(b),
      evicted: (which, address) => log.push(`evicted ${which} ${address}`),
      lifted: (b) => log.push(`lifted ${b.address}`),
      disabled: (n) => log.push(`disabled ${n}`),
    },
  });
  list.configure({ settings: { ...SETTINGS, ...settings }, clientAddress: (c) => parseIp(c.source.address) });
  const deny = (address: string, code: ReasonCode<'data'> = 'authz.denied', times = 1) => {
    for (let i = 0; i < times; i++) list.recordDenial(call(address), code);
  };
  return { clock, list, log, banned, deny };
}

describe('ban list: threshold and window', () => {
  it('bans on the threshold-th denial within the window, not before', () => {
    const { list, deny, banned } = setup();
    deny('198.51.100.1', 'authz.denied', 2);
    expect(list.check('198.51.100.1')).toBeUndefined();
    deny('198.51.100.1', 'request.body_too_large'); // any 4xx code of REASON_CODES counts
    expect(list.check('198.51.100.1')).toEqual({ remainingMs: 600_000 });
    expect(banned).toEqual([{ address: '198.51.100.1', until: new Date(1_000_000 + 600_000).toISOString(), reason: 'request.body_too_large', count: 3 }]);
  });

  const cases: Array<[string, Array<[number, ReasonCode<'data'>?]>, boolean]> = [
    ['three denials in a burst', [[0], [0], [0]], true],
    ['three denials within the window', [[0], [30_000], [59_999]], true],
    ['spread over two windows, weighted: too slow', [[0], [59_000], [119_000]], false],
    ['two windows apart: counting starts over', [[0], [0], [120_000]], false],
    ['previous window weighs in (2 * 0.5 + 2 = 3)', [[0], [1], [90_000], [90_000]], true],
    [
      "5xx codes are the sidecar's trouble, not counted",
      [
        [0, 'policy.unavailable'],
        [0, 'filter.error'],
        [0, 'filter.error'],
      ],
      false,
    ],
    [
      'ip.denied is not counted (the lists refuse it already)',
      [
        [0, 'ip.denied'],
        [0, 'ip.denied'],
        [0, 'ip.denied'],
      ],
      false,
    ],
    [
      'ip.banned is not counted',
      [
        [0, 'ip.banned'],
        [0, 'ip.banned'],
        [0, 'ip.banned'],
      ],
      false,
    ],
    [
      'request.cancelled is not counted (the caller left mid-body)',
      [
        [0, 'request.cancelled'],
        [0, 'request.cancelled'],
        [0, 'request.cancelled'],
      ],
      false,
    ],
  ];
  for (const [name, steps, expected] of cases) {
    it(name, () => {
      const { clock, list, deny } = setup();
      let at = 0;
      for (const [time, code] of steps) {
        clock.advance(time - at);
        at = time;
        deny('198.51.100.1', code ?? 'authz.denied');
      }
      expect(list.check('198.51.100.1') !== undefined).toBe(expected);
    });
  }

  it('counts per address, in one spelling (mapped IPv4 is IPv4)', () => {
    const { list, deny } = setup();
    deny('198.51.100.1');
    deny('::ffff:198.51.100.1');
    deny('198.51.100.2');
    expect(list.check('198.51.100.1')).toBeUndefined();
    deny('198.51.100.1');
    expect(list.check('198.51.100.1')).toBeDefined();
    expect(list.check('198.51.100.2')).toBeUndefined();
  });
});

describe('ban list: expiry', () => {
  it('a ban lasts `duration`, then the address starts from zero', () => {
    const { clock, list, deny } = setup();
    deny('2001:db8::1', 'authz.denied', 3);
    clock.advance(599_999);
    expect(list.check('2001:db8::1')).toEqual({ remainingMs: 1 });
    clock.advance(1);
    expect(list.check('2001:db8::1')).toBeUndefined();
    expect(list.list()).toEqual([]);
    deny('2001:db8::1', 'authz.denied', 2);
    expect(list.check('2001:db8::1')).toBeUndefined();
  });

  it('denials while banned do not extend the ban', () => {
    const { clock, list, deny } = setup();
    deny('198.51.100.1', 'authz.denied', 3);
    clock.advance(300_000);
    deny('198.51.100.1', 'authz.denied', 10);
    expect(list.check('198.51.100.1')).toEqual({ remainingMs: 300_000 });
  });

  it('size() and list() leave out expired bans, soonest expiry first', () => {
    const { clock, list, deny } = setup();
    deny('198.51.100.1', 'authz.denied', 3);
    clock.advance(100_000);
    deny('198.51.100.2', 'authz.denied', 3);
    expect(list.list().map((b) => b.address)).toEqual(['198.51.100.1', '198.51.100.2']);
    clock.advance(500_000);
    expect(list.size()).toBe(1);
    expect(list.list().map((b) => b.address)).toEqual(['198.51.100.2']);
  });
});

describe('ban list: bounded size', () => {
  it('when full, the ban expiring soonest makes room, and the eviction is reported', () => {
    const { clock, list, log, deny } = setup({ maxEntries: 2 });
    deny('198.51.100.1', 'authz.denied', 3);
    clock.advance(1_000);
    deny('198.51.100.2', 'authz.denied', 3);
    clock.advance(1_000);
    deny('198.51.100.3', 'authz.denied', 3);
    expect(list.list().map((b) => b.address)).toEqual(['198.51.100.2', '198.51.100.3']);
    expect(log).toEqual(['evicted bans 198.51.100.1']);
  });

  it('expired bans are dropped before anything is evicted', () => {
    const { clock, list, log, deny } = setup({ maxEntries: 1, duration: 10_000 });
    deny('198.51.100.1', 'authz.denied', 3);
    clock.advance(10_000);
    deny('198.51.100.2', 'authz.denied', 3);
    expect(list.list().map((b) => b.address)).toEqual(['198.51.100.2']);
    expect(log).toEqual([]);
  });

  it('soonest expiry, not insertion order, after the duration changed', () => {
    const { list, log, deny } = setup({ maxEntries: 2 });
    deny('198.51.100.1', 'authz.denied', 3); // until +600 s
    list.configure({ settings: { ...SETTINGS, maxEntries: 2, duration: 60_000 }, clientAddress: (c) => parseIp(c.source.address) });
    deny('198.51.100.2', 'authz.denied', 3); // until +60 s
    deny('198.51.100.3', 'authz.denied', 3);
    expect(log).toEqual(['evicted bans 198.51.100.2']);
    expect(list.list().map((b) => b.address)).toEqual(['198.51.100.3', '198.51.100.1']);
  });

  it('denial counters are bounded too: the least recently denied address goes first', () => {
    const { list, log, deny } = setup({ maxEntries: 2 });
    deny('198.51.100.1');
    deny('198.51.100.2');
    deny('198.51.100.1');
    deny('198.51.100.3');
    expect(log).toEqual(['evicted counters 198.51.100.2']);
    deny('198.51.100.1');
    expect(list.check('198.51.100.1')).toBeDefined();
  });

  it('a smaller maxEntries from a new snapshot trims at once', () => {
    const { clock, list, log, deny } = setup({ maxEntries: 3 });
    for (const a of ['198.51.100.1', '198.51.100.2', '198.51.100.3']) {
      deny(a, 'authz.denied', 3);
      clock.advance(1);
    }
    list.configure({ settings: { ...SETTINGS, maxEntries: 1 }, clientAddress: (c) => parseIp(c.source.address) });
    expect(list.list().map((b) => b.address)).toEqual(['198.51.100.3']);
    expect(log).toEqual(['evicted bans 198.51.100.1', 'evicted bans 198.51.100.2']);
  });

  it('stays bounded under a flood of distinct addresses', () => {
    const { list, deny } = setup({ maxEntries: 50, threshold: 1 });
    for (let i = 0; i < 5_000; i++) deny(`2001:db8::${i.toString(16)}`);
    expect(list.size()).toBe(50);
  });
});

describe('ban list: admin and configuration', () => {
  it('remove lifts a ban and resets the count', () => {
    const { list, log, deny } = setup();
    deny('198.51.100.1', 'authz.denied', 3);
    expect(list.remove('198.51.100.1')).toMatchObject({ address: '198.51.100.1', count: 3 });
    expect(list.check('198.51.100.1')).toBeUndefined();
    expect(list.remove('198.51.100.1')).toBeUndefined();
    expect(log).toEqual(['lifted 198.51.100.1']);
    deny('198.51.100.1', 'authz.denied', 2);
    expect(list.check('198.51.100.1')).toBeUndefined();
  });

  it('turning auto-ban off drops every ban and stops counting', () => {
    const { list, log, deny } = setup();
    deny('198.51.100.1', 'authz.denied', 3);
    list.configure(undefined);
    expect(list.enabled).toBe(false);
    expect(list.size()).toBe(0);
    deny('198.51.100.2', 'authz.denied', 5);
    expect(list.size()).toBe(0);
    expect(log).toEqual(['disabled 1']);
  });

  it('a new snapshot with the same settings keeps bans and counts', () => {
    const { list, deny } = setup();
    deny('198.51.100.1', 'authz.denied', 3);
    deny('198.51.100.2', 'authz.denied', 2);
    list.configure({ settings: SETTINGS, clientAddress: (c) => parseIp(c.source.address) });
    expect(list.check('198.51.100.1')).toBeDefined();
    deny('198.51.100.2');
    expect(list.check('198.51.100.2')).toBeDefined();
  });

  it('an unknown client address is not counted', () => {
    const { list, deny } = setup({ threshold: 1 });
    deny('not-an-address');
    expect(list.size()).toBe(0);
  });
});
