import type { IncomingHttpHeaders } from 'node:http';
import { BlockList, isIP } from 'node:net';

/*
 * Who is calling, as an IP address: the connection's peer, or, when that peer
 * is a trusted proxy, the first address of `x-forwarded-for` read from the
 * right that is not itself a trusted proxy.
 *
 * Invariant: every address this module returns is canonical (IPv4 dotted
 * quad; IPv6 in RFC 5952 form, lower case, longest zero run compressed) and
 * IPv4-mapped IPv6 (`::ffff:a.b.c.d`) comes back as the IPv4 address, so one
 * client has one spelling: ban counters and BlockList checks cannot be dodged
 * by writing the same address another way.
 */

type IpFamily = 'ipv4' | 'ipv6';

/**
 * CIDRs split by family. IPv6 entries never match IPv4 clients (Node's
 * BlockList would match `::/0` against every IPv4 address through its mapped
 * form); an IPv4-mapped CIDR (`::ffff:10.0.0.0/104`) is stored as the IPv4
 * CIDR it means (`10.0.0.0/8`).
 */
export interface AddressSet {
  has(address: string, family: IpFamily): boolean;
}

export function compileAddressSet(cidrs: readonly string[]): AddressSet {
  let v4: BlockList | undefined;
  let v6: BlockList | undefined;
  for (const cidr of cidrs) {
    const slash = cidr.indexOf('/');
    const parsed = parseIp(slash < 0 ? cidr : cidr.slice(0, slash));
    if (!parsed) throw new Error(`not an IP address or CIDR: ${cidr}`);
    const written = slash < 0 ? (parsed.family === 'ipv4' && !parsed.mapped ? 32 : 128) : Number(cidr.slice(slash + 1));
    // A mapped CIDR of /96 or longer is the IPv4 CIDR it spells; a shorter one also covers real IPv6 space, so it stays IPv6.
    const asIpv4 = parsed.family === 'ipv4' && (!parsed.mapped || written >= 96);
    const family: IpFamily = asIpv4 ? 'ipv4' : 'ipv6';
    const bits = parsed.mapped && asIpv4 ? written - 96 : written;
    const address = asIpv4 ? parsed.address : parsed.mapped ? `::ffff:${parsed.address}` : parsed.address;
    const list = family === 'ipv4' ? (v4 ??= new BlockList()) : (v6 ??= new BlockList());
    list.addSubnet(address, bits, family);
  }
  // Node's BlockList.check builds a SocketAddress for each address it checks: ~5.5 µs per call in the
  // bench:mesh every-filter orders sidecar under load (--cpu-prof), where the same few peers call again
  // and again. Answers are kept per address (canonical, so one spelling per client; an IPv6 one always
  // has a colon, an IPv4 one never), at most KEPT_ANSWERS, then all forgotten at once: a caller that
  // sprays addresses costs the checks it would have cost anyway.
  const answers = new Map<string, boolean>();
  return {
    has(address, family) {
      let answer = answers.get(address);
      if (answer === undefined) {
        answer = family === 'ipv4' ? (v4?.check(address, 'ipv4') ?? false) : (v6?.check(address, 'ipv6') ?? false);
        if (answers.size >= KEPT_ANSWERS) answers.clear();
        answers.set(address, answer);
      }
      return answer;
    },
  };
}

/** Addresses whose answer one AddressSet keeps (~60 KB at most). */
const KEPT_ANSWERS = 1024;

export interface ParsedIp {
  /** Canonical form; the IPv4 address for an IPv4-mapped IPv6 one. */
  readonly address: string;
  readonly family: IpFamily;
  /** True when the text was an IPv4-mapped IPv6 address. */
  readonly mapped: boolean;
}

/** Parses one address (no port, no zone); undefined when it is not one. */
export function parseIp(text: string): ParsedIp | undefined {
  const family = isIP(text);
  if (family === 4) return { address: text, family: 'ipv4', mapped: false };
  if (family !== 6 || text.includes('%')) return undefined;
  const groups = ipv6Groups(text);
  if (!groups) return undefined;
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    const hi = groups[6]!;
    const lo = groups[7]!;
    return { address: `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`, family: 'ipv4', mapped: true };
  }
  return { address: formatIpv6(groups), family: 'ipv6', mapped: false };
}

/** The eight 16-bit groups of an address isIP() accepted as IPv6. */
function ipv6Groups(text: string): number[] | undefined {
  let head = text;
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const last = text.slice(lastColon + 1);
  if (last.includes('.')) {
    const octets = last.split('.').map(Number);
    if (octets.length !== 4) return undefined;
    tail = [(octets[0]! << 8) | octets[1]!, (octets[2]! << 8) | octets[3]!];
    head = text.slice(0, lastColon + 1);
    // `::1.2.3.4` leaves `::`; `64:ff9b::1.2.3.4` leaves `64:ff9b::`; `1:2:3:4:5:6:1.2.3.4` leaves a dangling ':'.
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const want = 8 - tail.length;
  const hex = (part: string): number => Number.parseInt(part, 16);
  const double = head.indexOf('::');
  let groups: number[];
  if (double < 0) {
    groups = head === '' ? [] : head.split(':').map(hex);
  } else {
    const left = head.slice(0, double);
    const right = head.slice(double + 2);
    const l = left === '' ? [] : left.split(':').map(hex);
    const r = right === '' ? [] : right.split(':').map(hex);
    const zeros = want - l.length - r.length;
    if (zeros < 0) return undefined;
    groups = [...l, ...new Array<number>(zeros).fill(0), ...r];
  }
  groups.push(...tail);
  if (groups.length !== 8 || groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) return undefined;
  return groups;
}

/** RFC 5952: lower-case hex, no leading zeros, the longest run (first on a tie) of two or more zero groups as `::`. */
function formatIpv6(groups: readonly number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

/**
 * The connection's peer as Node reports it (`socket.remoteAddress`): already
 * canonical, except that a dual-stack listener shows IPv4 peers as
 * `::ffff:a.b.c.d`. Cheap on purpose: it runs on every call.
 */
export function connectionAddress(remote: string): ParsedIp | undefined {
  if (remote.startsWith('::ffff:') && isIP(remote.slice(7)) === 4) return { address: remote.slice(7), family: 'ipv4', mapped: true };
  if (remote.includes(':')) return isIP(remote) === 6 ? { address: remote, family: 'ipv6', mapped: false } : undefined;
  return isIP(remote) === 4 ? { address: remote, family: 'ipv4', mapped: false } : undefined;
}

/**
 * One `x-forwarded-for` entry: an address, optionally with a port
 * (`1.2.3.4:80`, `[2001:db8::1]:80`) as some proxies write it.
 */
export function parseForwardedEntry(entry: string): ParsedIp | undefined {
  const text = entry.trim();
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return undefined;
    const rest = text.slice(close + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return undefined;
    const parsed = parseIp(text.slice(1, close));
    return parsed?.family === 'ipv6' || parsed?.mapped ? parsed : undefined;
  }
  const colon = text.indexOf(':');
  if (colon >= 0 && colon === text.lastIndexOf(':')) {
    // One colon: IPv4 with a port.
    if (!/^\d{1,5}$/.test(text.slice(colon + 1))) return undefined;
    const parsed = parseIp(text.slice(0, colon));
    return parsed?.family === 'ipv4' && !parsed.mapped ? parsed : undefined;
  }
  return parseIp(text);
}

/** Most `x-forwarded-for` hops walked: more is someone padding the header, not a real proxy chain. */
export const MAX_FORWARDED_HOPS = 32;

export type ClientAddressResult = ParsedIp | undefined;

/**
 * Resolves the client address of a call, compiled once per trusted-proxy list.
 *
 * - The connection's peer is the client unless it is a trusted proxy; only
 *   then is `x-forwarded-for` read at all.
 * - The header is walked right to left (each proxy appends the peer it saw),
 *   skipping trusted proxies; the first untrusted entry is the client. Entries
 *   to its left were written by the client or by proxies we do not trust, so
 *   the leftmost entry is never believed on its own.
 * - When every entry is a trusted proxy, the leftmost one is the client (a
 *   call made by the proxy itself). No header, or an empty one: the peer.
 * - An entry that is not an address, reached before any untrusted one, or a
 *   chain longer than MAX_FORWARDED_HOPS: undefined (the client cannot be
 *   known; the filter decides what that means).
 */
export function createClientAddressResolver(trustedProxies: readonly string[]): (remoteAddress: string, headers: IncomingHttpHeaders) => ClientAddressResult {
  const trusted = trustedProxies.length > 0 ? compileAddressSet(trustedProxies) : undefined;
  return (remoteAddress, headers) => {
    const peer = connectionAddress(remoteAddress);
    if (!peer || !trusted || !trusted.has(peer.address, peer.family)) return peer;
    const raw = headers['x-forwarded-for'];
    const xff: string | undefined = Array.isArray(raw) ? raw.join(',') : raw;
    if (xff === undefined || xff.trim() === '') return peer;
    let end = xff.length;
    let client: ParsedIp = peer;
    for (let hops = 0; end > 0; hops++) {
      if (hops >= MAX_FORWARDED_HOPS) return undefined;
      const comma = xff.lastIndexOf(',', end - 1);
      const entry = xff.slice(comma + 1, end);
      end = comma < 0 ? 0 : comma;
      if (entry.trim() === '') continue; // `a,,b` or a trailing comma: no hop
      const hop = parseForwardedEntry(entry);
      if (!hop) return undefined;
      client = hop;
      if (!trusted.has(hop.address, hop.family)) return hop;
    }
    return client;
  };
}
