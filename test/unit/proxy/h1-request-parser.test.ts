import { describe, expect, it } from 'vitest';
import { RequestFramingError, RequestParser } from '../../../src/proxy/h1-request-parser.ts';
import type { RecordedRequests } from '../../helpers/request-sink.ts';
import { recordingSink } from '../../helpers/request-sink.ts';

interface Parsed extends RecordedRequests {
  /** Bytes handed back after the first request ended (a pipelined request). */
  rest: string;
}

const LIMITS = { maxHeaderSize: 1024, maxHeadersCount: 8 };

/** Feeds `wire` in pieces of `step` bytes (every split point is a place a TCP read can end); stops at the first request's end. */
function parse(wire: string, step?: number): Parsed {
  const out: Parsed = { heads: [], body: '', completes: 0, rest: '' };
  const parser = new RequestParser(recordingSink(out), LIMITS);
  const bytes = Buffer.from(wire, 'latin1');
  const size = step ?? bytes.length;
  for (let at = 0; at < bytes.length; at += size) {
    const rest = parser.execute(bytes.subarray(at, at + size));
    if (rest !== undefined) {
      out.rest = Buffer.concat([rest, bytes.subarray(at + size)]).toString('latin1');
      break;
    }
  }
  return out;
}

function refused(wire: string): { code: string; reason: string } {
  try {
    parse(wire);
  } catch (err) {
    expect(err).toBeInstanceOf(RequestFramingError);
    return { code: (err as RequestFramingError).reasonCode, reason: (err as Error).message };
  }
  throw new Error('the request was accepted');
}

describe('HTTP/1.1 requests the sidecar reads from its callers', () => {
  it('reads a head into node:http’s shape, however the bytes are split', () => {
    const wire = 'GET /a?b=1 HTTP/1.1\r\nHost: orders\r\nAccept: a\r\naccept: b\r\nCookie: x=1\r\nCookie: y=2\r\nSet-Cookie: s\r\n\r\n';
    for (const step of [1, 2, 5, wire.length]) {
      const r = parse(wire, step);
      expect(r.completes).toBe(1);
      expect(r.heads).toHaveLength(1);
      const head = r.heads[0]!;
      expect(head).toMatchObject({ method: 'GET', url: '/a?b=1', minorVersion: 1, hasBody: false, keepAlive: true, expectsContinue: false });
      expect(head.headers).toEqual({ host: 'orders', accept: 'a, b', cookie: 'x=1; y=2', 'set-cookie': ['s'] });
      expect(head.rawHeaders).toEqual(['Host', 'orders', 'Accept', 'a', 'accept', 'b', 'Cookie', 'x=1', 'Cookie', 'y=2', 'Set-Cookie', 's']);
    }
  });

  it('reads a Content-Length body and a chunked body (extensions and trailers dropped), and stops at the end of the request', () => {
    const fixed = parse('POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\n\r\n', 3);
    expect(fixed).toMatchObject({ body: 'hello', completes: 1, rest: 'GET /next HTTP/1.1\r\n\r\n' });
    expect(fixed.heads[0]!.hasBody).toBe(true);
    const chunked = 'POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\nGET /';
    for (const step of [1, 4, chunked.length]) expect(parse(chunked, step)).toMatchObject({ body: 'hello world', completes: 1, rest: 'GET /' });
  });

  it('hands a body that came in the read of its head whole with the head, and one split from it through onBody', () => {
    const wire = 'POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\n\r\n';
    const whole = parse(wire);
    expect(whole.heads[0]!.wholeBody?.toString()).toBe('hello');
    expect(whole).toMatchObject({ body: 'hello', completes: 1, rest: 'GET /next HTTP/1.1\r\n\r\n' });
    // The body's last byte in the next read: streamed as before.
    const split = parse(wire, wire.indexOf('hello') + 4);
    expect(split.heads[0]!.wholeBody).toBeUndefined();
    expect(split).toMatchObject({ body: 'hello', completes: 1, rest: 'GET /next HTTP/1.1\r\n\r\n' });
  });

  it('takes an empty line before a request line, HTTP/1.0 and its keep-alive, Connection: close, Expect: 100-continue', () => {
    expect(parse('\r\nGET / HTTP/1.0\r\n\r\n').heads[0]).toMatchObject({ minorVersion: 0, keepAlive: false });
    expect(parse('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n').heads[0]!.keepAlive).toBe(true);
    expect(parse('GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n').heads[0]!.keepAlive).toBe(false);
    expect(parse('PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n').heads[0]!.expectsContinue).toBe(true);
    // Nothing to wait for without a body.
    expect(parse('GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n').heads[0]!.expectsContinue).toBe(false);
  });

  it('refuses a bare CR before the request line however the bytes are split', () => {
    for (const step of [1, 2, 100]) {
      expect(() => parse('\r\n\rGET / HTTP/1.1\r\nHost: a\r\n\r\n', step)).toThrow(RequestFramingError);
    }
  });

  it.each([
    ['two spaces in the request line', 'GET  / HTTP/1.1\r\n\r\n'],
    ['a tab in the request line', 'GET\t/ HTTP/1.1\r\n\r\n'],
    ['HTTP/2.0 in an HTTP/1.1 request line', 'GET / HTTP/2.0\r\n\r\n'],
    ['a target that is no path, URL or *', 'GET nothing-here HTTP/1.1\r\n\r\n'],
    ['a bare LF line end', 'GET / HTTP/1.1\nHost: a\r\n\r\n'],
    ['a bare LF inside the head', 'GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n'],
    ['a bare CR inside a value', 'GET / HTTP/1.1\r\nX: a\rb\r\n\r\n'],
    ['obs-fold', 'GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n'],
    ['whitespace before the colon', 'GET / HTTP/1.1\r\nHost : a\r\n\r\n'],
    ['a NUL in a value', 'GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n'],
    ['Content-Length with Transfer-Encoding', 'POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['two Content-Length fields, even equal', 'POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n'],
    ['a Content-Length that is not digits', 'POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n'],
    ['a transfer coding other than chunked', 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'],
    ['Transfer-Encoding twice', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['Transfer-Encoding in HTTP/1.0', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['a chunk size that is not hex', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n'],
    ['chunk data longer than its size', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n'],
    ['a chunk-size line beyond 4 KiB', `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;${'a'.repeat(5000)}\r\nx\r\n0\r\n\r\n`],
  ])('refuses %s as request.malformed', (_case, wire) => {
    expect(refused(wire).code).toBe('request.malformed');
  });

  it('refuses CONNECT as request.unsupported', () => {
    expect(refused('CONNECT orders:443 HTTP/1.1\r\nHost: orders:443\r\n\r\n').code).toBe('request.unsupported');
  });

  it('refuses a head over maxHeaderSize, one field past maxHeadersCount, and a trailer section over maxHeaderSize as request.headers_too_large', () => {
    expect(refused(`GET / HTTP/1.1\r\nX: ${'a'.repeat(1100)}\r\n\r\n`).code).toBe('request.headers_too_large');
    // Bounded before the end of the head arrives, too.
    expect(refused(`GET / HTTP/1.1\r\nX: ${'a'.repeat(1100)}`).code).toBe('request.headers_too_large');
    const fields = (n: number): string => Array.from({ length: n }, (_, i) => `X-${i}: v\r\n`).join('');
    expect(parse(`GET / HTTP/1.1\r\n${fields(8)}\r\n`).completes).toBe(1);
    expect(refused(`GET / HTTP/1.1\r\n${fields(9)}\r\n`)).toEqual({ code: 'request.headers_too_large', reason: 'more than 8 header fields' });
    expect(refused(`POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ${'a'.repeat(1100)}`).code).toBe('request.headers_too_large');
  });
});
