import { describe, expect, it } from 'vitest';
import { compileAddressSet, connectionAddress, createClientAddressResolver, MAX_FORWARDED_HOPS, parseForwardedEntry, parseIp } from '../../../src/proxy/client-address.ts';
import { heapUsedAfterGc } from '../../helpers/heap.ts';

describe('parseIp: one canonical spelling per address', () => {
  const cases: Array<[string, string | undefined, string?]> = [
    ['10.1.2.3', '10.1.2.3', 'ipv4'],
    ['2001:db8::1', '2001:db8::1', 'ipv6'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1', 'ipv6'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1', 'ipv6'], // RFC 5952: first of two equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1', 'ipv6'], // a single zero group stays
    ['::', '::', 'ipv6'],
    ['::1', '::1', 'ipv6'],
    ['::ffff:10.1.2.3', '10.1.2.3', 'ipv4'],
    ['::FFFF:a01:203', '10.1.2.3', 'ipv4'],
    ['0:0:0:0:0:ffff:10.1.2.3', '10.1.2.3', 'ipv4'],
    ['64:ff9b::10.1.2.3', '64:ff9b::a01:203', 'ipv6'], // NAT64 is not mapped
    ['fe80::1%eth0', undefined],
    ['10.1.2', undefined],
    ['010.1.2.3', undefined],
    ['', undefined],
    ['example.com', undefined],
  ];
  for (const [text, address, family] of cases) {
    it(`${JSON.stringify(text)} -> ${address ?? 'not an address'}`, () => {
      const parsed = parseIp(text);
      expect(parsed?.address).toBe(address);
      if (family) expect(parsed?.family).toBe(family);
    });
  }

  it('connection addresses: dual-stack IPv4 peers come back as IPv4', () => {
    expect(connectionAddress('::ffff:127.0.0.1')).toEqual({ address: '127.0.0.1', family: 'ipv4', mapped: true });
    expect(connectionAddress('127.0.0.1')?.family).toBe('ipv4');
    expect(connectionAddress('::1')?.family).toBe('ipv6');
    expect(connectionAddress('')).toBeUndefined();
  });

  it('x-forwarded-for entries may carry a port', () => {
    expect(parseForwardedEntry(' 10.1.2.3:8080 ')?.address).toBe('10.1.2.3');
    expect(parseForwardedEntry('[2001:DB8::1]:443')?.address).toBe('2001:db8::1');
    expect(parseForwardedEntry('[2001:db8::1]')?.address).toBe('2001:db8::1');
    expect(parseForwardedEntry('[10.1.2.3]')).toBeUndefined();
    expect(parseForwardedEntry('10.1.2.3:http')).toBeUndefined();
    expect(parseForwardedEntry('unknown')).toBeUndefined();
    expect(parseForwardedEntry('[2001:db8::1')).toBeUndefined();
  });
});

describe('compileAddressSet: IPv4, IPv6 and mapped CIDRs', () => {
  const set = compileAddressSet(['10.0.0.0/8', '192.0.2.7', '2001:db8::/32', '::ffff:198.51.100.0/120', '::1']);
  const cases: Array<[string, boolean]> = [
    ['10.255.0.1', true],
    ['11.0.0.1', false],
    ['192.0.2.7', true],
    ['192.0.2.8', false],
    ['2001:db8:1::5', true],
    ['2001:db9::5', false],
    ['198.51.100.77', true], // the mapped CIDR means 198.51.100.0/24
    ['198.51.101.1', false],
    ['::1', true],
  ];
  for (const [address, expected] of cases) {
    it(`${address} ${expected ? 'in' : 'not in'} the set`, () => {
      const parsed = parseIp(address)!;
      expect(set.has(parsed.address, parsed.family)).toBe(expected);
    });
  }

  it('IPv6 CIDRs never match IPv4 clients, not even ::/0', () => {
    const all6 = compileAddressSet(['::/0']);
    expect(all6.has('10.1.2.3', 'ipv4')).toBe(false);
    expect(all6.has('2001:db8::1', 'ipv6')).toBe(true);
    const all4 = compileAddressSet(['0.0.0.0/0']);
    expect(all4.has('2001:db8::1', 'ipv6')).toBe(false);
  });

  it('keeps a bounded number of answers: 100 000 sprayed IPv6 addresses leave the heap where it was', () => {
    const set = compileAddressSet(['2001:db8::/32']);
    const spray = (from: number) => {
      for (let i = from; i < from + 100_000; i++) set.has(`2001:db8:${(i >>> 16).toString(16)}::${(i & 0xffff).toString(16)}`, 'ipv6');
    };
    spray(0);
    const before = heapUsedAfterGc();
    spray(100_000);
    // Kept without a bound, each answer held its address: ~10 MiB for these.
    expect(heapUsedAfterGc() - before).toBeLessThan(1024 * 1024);
  });

  it('answers each address the same however often and in whatever order it comes, past the answers it keeps', () => {
    const set = compileAddressSet(['10.0.0.0/24', '2001:db8::/120']);
    // 3 024 distinct addresses, in and out of the set, twice: the kept answers (1 024) are forgotten on the way.
    const v4 = Array.from({ length: 2_000 }, (_, i) => ({ text: `10.0.${i % 8}.${Math.floor(i / 8)}`, inside: i % 8 === 0 }));
    const v6 = Array.from({ length: 1_024 }, (_, i) => ({ text: `2001:db8::${i.toString(16)}`, inside: i < 0x100 }));
    for (let round = 0; round < 2; round++) {
      for (const { text, inside } of [...v4, ...v6]) {
        const parsed = parseIp(text)!;
        expect(set.has(parsed.address, parsed.family), text).toBe(inside);
      }
    }
  });
});

describe('client address through trusted proxies', () => {
  const resolve = createClientAddressResolver(['10.0.0.0/8', '2001:db8:ffff::/48']);
  const cases: Array<[string, string, string | string[] | undefined, string | undefined]> = [
    ['untrusted peer: x-forwarded-for ignored', '203.0.113.9', '198.51.100.1', '203.0.113.9'],
    ['untrusted peer, mapped form', '::ffff:203.0.113.9', '198.51.100.1', '203.0.113.9'],
    ['trusted peer, one hop', '10.0.0.2', '198.51.100.1', '198.51.100.1'],
    ['trusted peer over dual stack', '::ffff:10.0.0.2', '198.51.100.1', '198.51.100.1'],
    ['trusted peer, no header: the proxy itself', '10.0.0.2', undefined, '10.0.0.2'],
    ['trusted peer, empty header', '10.0.0.2', ' ', '10.0.0.2'],
    ['spoofed leftmost entry is not believed', '10.0.0.2', '127.0.0.1, 198.51.100.1', '198.51.100.1'],
    ['spoofed trusted-looking leftmost entry is not believed', '10.0.0.2', '10.9.9.9, 198.51.100.1', '198.51.100.1'],
    ['chain of trusted proxies is skipped', '10.0.0.2', '198.51.100.1, 10.0.0.7, 10.0.0.8', '198.51.100.1'],
    ['spoof behind a chain of trusted proxies', '10.0.0.2', '1.1.1.1, 198.51.100.1, 10.0.0.7', '198.51.100.1'],
    ['every hop trusted: the leftmost', '10.0.0.2', '10.0.0.5, 10.0.0.6', '10.0.0.5'],
    ['IPv6 client behind an IPv6 proxy', '2001:db8:ffff::1', '2001:DB8:0:0::42', '2001:db8::42'],
    ['mapped client in the header', '10.0.0.2', '::ffff:198.51.100.1', '198.51.100.1'],
    ['client with a port', '10.0.0.2', '[2001:db8::42]:5555', '2001:db8::42'],
    ['garbage left of the client is never read', '10.0.0.2', 'not-an-ip, 198.51.100.1', '198.51.100.1'],
    ['garbage written by a trusted proxy: unknown', '10.0.0.2', '198.51.100.1, garbage', undefined],
    ['empty entries are no hop', '10.0.0.2', '198.51.100.1,, ,', '198.51.100.1'],
    ['repeated headers (HTTP/2 arrays) read as one list', '10.0.0.2', ['1.1.1.1', '198.51.100.1'], '198.51.100.1'],
  ];
  for (const [name, peer, xff, expected] of cases) {
    it(name, () => {
      expect(resolve(peer, xff === undefined ? {} : { 'x-forwarded-for': xff })?.address).toBe(expected);
    });
  }

  it(`stops after ${MAX_FORWARDED_HOPS} trusted hops`, () => {
    const hops = Array.from({ length: MAX_FORWARDED_HOPS + 1 }, (_, i) => `10.0.1.${i}`);
    expect(resolve('10.0.0.2', { 'x-forwarded-for': ['198.51.100.1', ...hops].join(', ') })).toBeUndefined();
    expect(resolve('10.0.0.2', { 'x-forwarded-for': ['198.51.100.1', ...hops.slice(2)].join(', ') })?.address).toBe('198.51.100.1');
  });

  it('without trusted proxies the header is never read', () => {
    const none = createClientAddressResolver([]);
    expect(none('10.0.0.2', { 'x-forwarded-for': '198.51.100.1' })?.address).toBe('10.0.0.2');
  });
});
