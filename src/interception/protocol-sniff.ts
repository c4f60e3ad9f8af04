/*
 * Whether a captured outbound connection speaks HTTP, from its first bytes:
 * an HTTP/1.x request line starts with a method and a space; the HTTP/2
 * prior-knowledge preface starts with "PRI ". Anything else (a TLS client
 * hello, a database handshake) is another protocol. Only the method's worth
 * of bytes is needed, so a slow client is decided as soon as it sends them.
 */

const STARTS = ['GET ', 'HEAD ', 'POST ', 'PUT ', 'DELETE ', 'CONNECT ', 'OPTIONS ', 'TRACE ', 'PATCH ', 'PRI '].map((s) => Buffer.from(s, 'latin1'));

export type FirstBytes = 'http' | 'other' | 'more';

/** 'more': what arrived so far could still be the start of an HTTP request. */
export function classifyFirstBytes(seen: Buffer): FirstBytes {
  let could = false;
  for (const start of STARTS) {
    const n = Math.min(seen.length, start.length);
    if (!seen.subarray(0, n).equals(start.subarray(0, n))) continue;
    if (seen.length >= start.length) return 'http';
    could = true;
  }
  return could ? 'more' : 'other';
}
