import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RequestFramingError, RequestParser } from '../../src/proxy/h1-request-parser.ts';
import type { RecordedRequests } from '../helpers/request-sink.ts';
import { recordingSink } from '../helpers/request-sink.ts';

/*
 * Properties of the listeners' HTTP/1.1 request parser
 * (src/proxy/h1-request-parser.ts), which reads every byte a caller sends:
 * where TCP splits the bytes never changes what is read, and no input makes
 * it fail any other way than with a framing refusal.
 */

const LIMITS = { maxHeaderSize: 2048, maxHeadersCount: 16 };

interface Outcome {
  heads: Array<{ method: string; url: string; rawHeaders: string[] }>;
  body: string;
  completes: number;
  refused?: string;
}

/** Parses `wire` fed at `cuts`, following pipelined requests to the end. */
function parseAll(wire: Buffer, cuts: number[]): Outcome {
  const recorded: RecordedRequests = { heads: [], body: '', completes: 0 };
  const parser = new RequestParser(recordingSink(recorded), LIMITS);
  let refused: string | undefined;
  const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const at of [...points, wire.length]) {
    if (at > from) pieces.push(wire.subarray(from, at));
    from = Math.max(from, at);
  }
  try {
    let pending: Buffer | undefined;
    for (const piece of pieces) {
      pending = pending === undefined ? piece : Buffer.concat([pending, piece]);
      // A pipelined request comes back once the one before it ended: fed again, as the connection does.
      while (pending !== undefined && pending.length > 0) {
        const rest = parser.execute(pending);
        if (rest === undefined) {
          pending = undefined;
          break;
        }
        parser.next();
        pending = rest;
      }
    }
  } catch (err) {
    if (!(err instanceof RequestFramingError)) throw err;
    refused = err.reasonCode;
  }
  // What was read, not where it came from: a body arrives with its head or after it depending on the split.
  const heads = recorded.heads.map((h) => ({ method: h.method, url: h.url, rawHeaders: h.rawHeaders }));
  return { heads, body: recorded.body, completes: recorded.completes, ...(refused === undefined ? {} : { refused }) };
}

const token = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,11}$/);
const value = fc.stringMatching(/^[!-~]([ -~]{0,20}[!-~])?$/);
const request = fc.record({
  method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH'),
  path: fc.stringMatching(/^\/[A-Za-z0-9._~/-]{0,30}$/),
  fields: fc.array(fc.tuple(token, value), { maxLength: 6 }),
  body: fc.string({ maxLength: 60 }),
  chunked: fc.boolean(),
});

function encode(r: { method: string; path: string; fields: Array<[string, string]>; body: string; chunked: boolean }): string {
  const fields = r.fields.filter(([name]) => !/^(content-length|transfer-encoding|host|connection)$/i.test(name));
  let head = `${r.method} ${r.path} HTTP/1.1\r\nHost: orders\r\n${fields.map(([n, v]) => `${n}: ${v}\r\n`).join('')}`;
  if (!r.chunked) return `${head}Content-Length: ${Buffer.byteLength(r.body, 'latin1')}\r\n\r\n${r.body}`;
  head += 'Transfer-Encoding: chunked\r\n\r\n';
  const half = Math.floor(r.body.length / 2);
  const chunks = [r.body.slice(0, half), r.body.slice(half)].filter((c) => c.length > 0);
  return `${head}${chunks.map((c) => `${Buffer.byteLength(c, 'latin1').toString(16)}\r\n${c}\r\n`).join('')}0\r\n\r\n`;
}

describe('HTTP/1.1 request parser (property)', () => {
  it('reads the same requests, bodies and refusals wherever the bytes are split', () => {
    fc.assert(
      fc.property(fc.array(request, { minLength: 1, maxLength: 3 }), fc.array(fc.nat(), { maxLength: 12 }), (requests, cuts) => {
        const wire = Buffer.from(requests.map(encode).join(''), 'latin1');
        const whole = parseAll(wire, []);
        expect(whole.refused).toBeUndefined();
        expect(whole.completes).toBe(requests.length);
        expect(whole.heads.map((h) => h.url)).toEqual(requests.map((r) => r.path));
        expect(whole.body).toBe(requests.map((r) => r.body).join(''));
        expect(parseAll(wire, cuts)).toEqual(whole);
      }),
      { numRuns: 1500 },
    );
  });

  it('fails only with a framing refusal, however the bytes are mangled, and the same way wherever they are split', () => {
    // Edits favour the bytes framing turns on (CR, LF, space, tab, colon, NUL); a few empty lines may lead.
    const byte = fc.oneof(fc.constantFrom(13, 10, 32, 9, 58, 0), fc.integer({ min: 0, max: 255 }));
    const lead = fc.constantFrom('', '\r\n', '\r\n\r\n');
    const mangled = fc.tuple(lead, request, fc.array(fc.tuple(fc.nat(), byte), { minLength: 1, maxLength: 4 })).map(([before, r, edits]) => {
      const bytes = Buffer.from(before + encode(r), 'latin1');
      for (const [at, byte] of edits) bytes[at % bytes.length] = byte;
      return bytes;
    });
    fc.assert(
      fc.property(mangled, fc.array(fc.nat(), { maxLength: 8 }), (wire, cuts) => {
        const whole = parseAll(wire, []); // throws (and fails the property) on anything but RequestFramingError
        expect(parseAll(wire, cuts)).toEqual(whole);
      }),
      { numRuns: 5000 },
    );
  });
});
