import { describe, expect, it } from 'vitest';
import { ResponseParser, UpstreamProtocolError } from '../../../src/proxy/h1-response-parser.ts';

interface Parsed {
  status?: number;
  statusText?: string;
  headers?: Record<string, string | string[]>;
  body: string;
  trailers?: Record<string, string | string[]>;
  reusable?: boolean;
  ends: number;
}

/** Feeds `wire` in pieces of `step` bytes (every split point is a place a TCP read can end). */
function parse(wire: string, opts: { step?: number; head?: boolean; close?: boolean } = {}): Parsed {
  const out: Parsed = { body: '', ends: 0 };
  const parser = new ResponseParser(
    {
      onHead: (status, headers, statusText) => Object.assign(out, { status, headers, statusText }),
      onData: (chunk) => {
        out.body += chunk.toString('latin1');
      },
      onEnd: (trailers, reusable) => {
        out.ends++;
        Object.assign(out, { trailers, reusable });
      },
    },
    1024,
  );
  parser.expect(opts.head ?? false);
  const bytes = Buffer.from(wire, 'latin1');
  const step = opts.step ?? bytes.length;
  for (let at = 0; at < bytes.length; at += step) parser.execute(bytes.subarray(at, at + step));
  if (opts.close) parser.close();
  return out;
}

const refused = (wire: string, opts: { head?: boolean } = {}): string => {
  try {
    parse(wire, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(UpstreamProtocolError);
    expect((err as UpstreamProtocolError).code).toBe('MESHGATE_UPSTREAM_PROTOCOL');
    return (err as Error).message;
  }
  throw new Error('the response was accepted');
};

const CHUNKED = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n';

describe('HTTP/1.1 responses the sidecar reads from its upstreams', () => {
  it('reads a Content-Length body whole, however the bytes are split, and keeps the connection', () => {
    const wire = 'HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello world';
    for (const step of [1, 2, 3, 7, wire.length]) {
      const r = parse(wire, { step });
      expect(r).toMatchObject({ status: 201, statusText: 'Created', body: 'hello world', reusable: true, ends: 1 });
      expect(r.headers).toEqual({ 'content-type': 'text/plain', 'content-length': '11', 'set-cookie': ['a=1', 'b=2'] });
    }
  });

  it('reads a chunked body and its trailers at every split point', () => {
    for (let step = 1; step <= CHUNKED.length; step++) {
      const r = parse(CHUNKED, { step });
      expect(r.body).toBe('hello world');
      expect(r.trailers).toEqual({ 'grpc-status': '0', 'grpc-message': 'ok' });
      expect(r.ends).toBe(1);
    }
  });

  it('trims the whitespace around a field value and keeps obs-text bytes (latin1) as node:http does', () => {
    const r = parse('HTTP/1.1 200\r\nx-a: \t spaced \t \r\nx-b:\r\nx-name: Ren\u00e9\r\ncontent-length: 0\r\n\r\n');
    expect(r.statusText).toBe('');
    expect(r.headers).toMatchObject({ 'x-a': 'spaced', 'x-b': '', 'x-name': 'Ren\u00e9' });
  });

  it('skips informational responses and reads the final one', () => {
    const r = parse('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok', { step: 5 });
    expect(r).toMatchObject({ status: 200, body: 'ok', ends: 1 });
  });

  it('gives HEAD, 204 and 304 responses no body whatever they declare', () => {
    expect(parse('HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n', { head: true })).toMatchObject({ body: '', ends: 1, reusable: true });
    expect(parse('HTTP/1.1 204 No Content\r\n\r\n')).toMatchObject({ status: 204, ends: 1 });
    expect(parse('HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n')).toMatchObject({ status: 304, ends: 1 });
  });

  it('reads a body without length until the connection closes, and never reuses that connection', () => {
    const r = parse('HTTP/1.1 200 OK\r\n\r\nall of it', { close: true });
    expect(r).toMatchObject({ body: 'all of it', ends: 1, reusable: false });
  });

  it('does not reuse a connection the upstream says it closes, or an HTTP/1.0 one without keep-alive', () => {
    expect(parse('HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n').reusable).toBe(false);
    expect(parse('HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n').reusable).toBe(false);
    expect(parse('HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n').reusable).toBe(true);
  });

  it('refuses responses two parsers could frame differently (response splitting, desync)', () => {
    expect(refused('HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n')).toMatch(/both/);
    expect(refused('HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello')).toMatch(/conflicting/);
    expect(refused('HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello')).toMatch(/Content-Length/);
    expect(refused('HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n')).toMatch(/Content-Length/);
    expect(refused('HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n')).toMatch(/Transfer-Encoding/);
    expect(refused('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n')).toMatch(/chunk size/);
    expect(refused('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n')).toMatch(/CRLF/);
    expect(refused('HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\ncontent-length: 0\r\n\r\n')).toMatch(/header line/);
    expect(refused('HTTP/1.1 200 OK\r\nbad header : x\r\ncontent-length: 0\r\n\r\n')).toMatch(/header line/);
    expect(refused('HTTP/1.1 200 OK\r\nx: a\u0000b\r\ncontent-length: 0\r\n\r\n')).toMatch(/header value/);
    expect(refused('HTTP/1.1 200 OK\ncontent-length: 0\n\n\r\n\r\n')).toMatch(/status line|header line/);
    expect(refused('HTTP/1.1 200 OK\r\nx-a: 1\ncontent-length: 5\r\n\r\nhello')).toMatch(/header value/);
    expect(refused('HTTP/1.1 200 OK\r\nx-a: 1\rcontent-length: 5\r\n\r\nhello')).toMatch(/header value/);
    expect(refused('HTTP/1.1 200 OK\r\n: no name\r\n\r\n')).toMatch(/header line/);
    expect(refused('HTTP/2 200\r\n\r\n')).toMatch(/status line/);
    expect(refused('HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n')).toMatch(/101/);
  });

  it('refuses bytes after the end of a response (nothing else was asked on the connection)', () => {
    expect(refused('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n')).toMatch(/after the end/);
  });

  it('bounds what it holds: a head, a trailer section or a chunk-size line past its limit is refused', () => {
    expect(refused(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(2000)}`)).toMatch(/longer than 1024/);
    expect(refused(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(2000)}\r\ncontent-length: 0\r\n\r\n`)).toMatch(/larger than 1024/);
    expect(refused(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;${'e'.repeat(5000)}`)).toMatch(/chunk-size line/);
    expect(refused(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx: ${'t'.repeat(2000)}`)).toMatch(/trailer section/);
    // The same, whole in one read.
    expect(refused(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;${'e'.repeat(5000)}\r\nx\r\n0\r\n\r\n`)).toMatch(/chunk-size line/);
    expect(refused(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx: ${'t'.repeat(2000)}\r\n\r\n`)).toMatch(/trailer section/);
  });
});
