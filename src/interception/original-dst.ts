import type { Socket } from 'node:net';
import { isIPv6 } from 'node:net';

/*
 * Where a REDIRECTed connection was going. Linux keeps it in conntrack and
 * hands it out through getsockopt(fd, SOL_IP, SO_ORIGINAL_DST) (SOL_IPV6,
 * IP6T_SO_ORIGINAL_DST for IPv6); Node has no API for it, so libc's
 * getsockopt is called through koffi, a maintained FFI package that ships
 * prebuilt binaries (no native addon to build, no compiler in the image).
 * koffi is loaded only when interception is on.
 */

export interface OriginalDestination {
  /** IPv4 dotted quad or IPv6 text. */
  readonly address: string;
  readonly port: number;
}

export interface OriginalDstReader {
  /**
   * The destination the caller dialled before the redirect, or undefined when
   * the connection was not redirected: the socket reports its own local
   * address (an app using the sidecar as an HTTP proxy, or dialling
   * 127.0.0.1:15001 directly) or has no conntrack entry.
   */
  read(socket: Socket): OriginalDestination | undefined;
}

/** koffi or getsockopt cannot be had on this system; the message is one line for the user. */
export class InterceptionUnavailableError extends Error {}

const SOL_IP = 0;
const SOL_IPV6 = 41;
/** SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h) are both 80. */
const SO_ORIGINAL_DST = 80;
const SOCKADDR_IN = 16;
const SOCKADDR_IN6 = 28;
const AF_INET = 2;
const AF_INET6 = 10;

type GetSockOpt = (fd: number, level: number, name: number, value: Buffer, length: number[]) => number;

/** Loads koffi and binds getsockopt; throws InterceptionUnavailableError with the reason in one line. */
export async function loadOriginalDstReader(): Promise<OriginalDstReader> {
  if (process.platform !== 'linux') throw new InterceptionUnavailableError(`interception needs Linux (SO_ORIGINAL_DST); this is ${process.platform}`);
  let getsockopt: GetSockOpt;
  try {
    const koffi = (await import('koffi')).default;
    // The process's own symbols include libc's (node links it dynamically), whichever libc that is.
    const libc = koffi.load(null);
    getsockopt = libc.func('int getsockopt(int fd, int level, int name, _Out_ uint8_t *value, _Inout_ uint32_t *length)') as GetSockOpt;
  } catch (err) {
    throw new InterceptionUnavailableError(`interception needs the koffi package to read SO_ORIGINAL_DST, and it cannot load: ${firstLine(err)}`);
  }
  return { read: (socket) => readOriginalDst(getsockopt, socket) };
}

function readOriginalDst(getsockopt: GetSockOpt, socket: Socket): OriginalDestination | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  const local = socket.localAddress;
  if (typeof fd !== 'number' || fd < 0 || local === undefined) return undefined;
  // An IPv4 peer on a dual-stack socket (::ffff:a.b.c.d) is IPv4 to netfilter: SOL_IP answers for it.
  const v6 = isIPv6(local) && !local.startsWith('::ffff:');
  const value = Buffer.alloc(v6 ? SOCKADDR_IN6 : SOCKADDR_IN);
  const length = [value.length];
  if (getsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, SO_ORIGINAL_DST, value, length) !== 0) return undefined; // ENOENT: no conntrack entry
  const dst = parseSockaddr(value);
  if (!dst) return undefined;
  // Not redirected: conntrack's original tuple is the connection as it is.
  if (dst.port === socket.localPort && dst.address === plainAddress(local)) return undefined;
  return dst;
}

/** sockaddr_in / sockaddr_in6: family in host order (little-endian here), port and address in network order. */
export function parseSockaddr(buf: Buffer): OriginalDestination | undefined {
  const family = buf.readUInt16LE(0);
  const port = buf.readUInt16BE(2);
  if (family === AF_INET && buf.length >= SOCKADDR_IN) return { address: `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`, port };
  if (family === AF_INET6 && buf.length >= SOCKADDR_IN6) {
    const groups: string[] = [];
    for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(8 + i * 2).toString(16));
    return { address: compressIpv6(groups), port };
  }
  return undefined;
}

/** The address as Node prints it: ::ffff:a.b.c.d is IPv4 a.b.c.d. */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function compressIpv6(groups: string[]): string {
  // The longest run of zero groups becomes "::", as Node writes addresses.
  let best = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLength && j - i > 1) {
      best = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`;
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0]!;
}

/** Where a captured connection was going, kept on its socket for the requests that arrive on it. */
const ORIGINAL_DST = Symbol('meshgate.originalDestination');

export function tagOriginalDestination(socket: Socket, dst: OriginalDestination): void {
  (socket as unknown as Record<symbol, OriginalDestination>)[ORIGINAL_DST] = dst;
}

/**
 * The original destination of the connection a request came on, if it was
 * captured. `socket` is a request's socket: the raw socket (HTTP/1.1), a TLS
 * socket over it (its `_parent`), or HTTP/2's socket proxy, which forwards
 * property reads to the session's socket.
 */
export function originalDestinationOf(socket: unknown): OriginalDestination | undefined {
  const s = socket as (Record<symbol, OriginalDestination | undefined> & { _parent?: Record<symbol, OriginalDestination | undefined> }) | null | undefined;
  if (!s) return undefined;
  return s[ORIGINAL_DST] ?? s._parent?.[ORIGINAL_DST];
}
