import fc from 'fast-check';
import type { StoredConnection } from './live-mesh.ts';
import { fuzzLiveMesh, OUTBOUND_HOST } from './live-mesh.ts';

/*
 * A live sidecar (child process) fed random HTTP/1.1 bytes on its inbound and
 * outbound listeners: mutations of valid requests (bytes inserted, removed or
 * replaced, CR/LF/space/NUL, duplicated and conflicting framing headers, huge
 * values, pipelining, split points). After each batch: the process answers
 * /ready 200 within 1 s, and the apps behind it saw only well-formed requests,
 * each one the reference listener also parsed from the same bytes (see
 * live-mesh.ts).
 */

const H = OUTBOUND_HOST;

const BASES = [
  `GET /orders/1?x=1 HTTP/1.1\r\nHost: ${H}\r\n\r\n`,
  `POST /orders HTTP/1.1\r\nHost: ${H}\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"item":"a1"}`,
  `POST /orders HTTP/1.1\r\nHost: ${H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  `GET http://${H}/public/a HTTP/1.1\r\nHost: ${H}\r\n\r\n`,
  `GET /a HTTP/1.1\r\nHost: ${H}\r\n\r\nGET /b HTTP/1.1\r\nHost: ${H}\r\n\r\nHEAD /c HTTP/1.1\r\nHost: ${H}\r\nConnection: close\r\n\r\n`,
  // Request smuggling shapes: a second request hidden in a body by conflicting framing.
  `POST /public/x HTTP/1.1\r\nHost: ${H}\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ${H}\r\n\r\n`,
  `POST /public/x HTTP/1.1\r\nHost: ${H}\r\nContent-Length: 6\r\nContent-Length: 44\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ${H}\r\n\r\n`,
  `POST /public/x HTTP/1.1\r\nHost: ${H}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n2c\r\nGET /smuggled HTTP/1.1\r\nHost: ${H}\r\n\r\n\r\n0\r\n\r\n`,
  `POST /public/x HTTP/1.1\r\nHost: ${H}\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nX: GET /admin HTTP/1.1\r\nHost: ${H}\r\n\r\n`,
  `GET /admin/users HTTP/1.1\r\nHost: ${H}\r\n\r\n`,
  `GET /public/%2e%2e/admin HTTP/1.1\r\nHost: ${H}\r\n\r\n`,
  `OPTIONS * HTTP/1.1\r\nHost: ${H}\r\n\r\n`,
  `GET /orders HTTP/1.0\r\n\r\n`,
  `GET /orders HTTP/1.1\r\nHost: ${H}\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n`,
  `PUT /orders/1 HTTP/1.1\r\nHost: ${H}\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc`,
];

const INSERTS = [
  '\r',
  '\n',
  '\r\n',
  '\r\n\r\n',
  ' ',
  '\t',
  '\u0000',
  ':',
  ';',
  ',',
  '"',
  '%',
  '/',
  '\\',
  '..',
  '/../',
  '?',
  '#',
  '\u00ff',
  '\u0080',
  'Transfer-Encoding: chunked\r\n',
  'Transfer-Encoding : chunked\r\n',
  'Transfer-Encoding: xchunked\r\n',
  ' Transfer-Encoding: chunked\r\n',
  'Content-Length: 0\r\n',
  'Content-Length: 99999\r\n',
  'Content-Length: -1\r\n',
  'Content-Length: +5\r\n',
  'Content-Length: 5, 5\r\n',
  `Host: ${H}\r\n`,
  'Host: other\r\n',
  'Connection: close\r\n',
  'Connection: keep-alive, x-drop\r\nx-drop: 1\r\n',
  'X-Folded: a\r\n b\r\n',
  'ffffffffffffffff\r\n',
  '0\r\n\r\n',
  '5;ext="x"\r\nhello\r\n',
  `GET /smuggled HTTP/1.1\r\nHost: ${H}\r\n\r\n`,
  `x-${'a'.repeat(70)}: 1\r\n`,
  'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
];

const edit = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('insert' as const), at: fc.nat(), text: fc.oneof(fc.constantFrom(...INSERTS), fc.string({ unit: 'binary', maxLength: 6 })) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 12 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('byte' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('duplicate-line' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('huge' as const), at: fc.nat(), size: fc.constantFrom(4096, 17_000, 70_000), header: fc.boolean() }) },
);

type Edit = typeof edit extends fc.Arbitrary<infer E> ? E : never;

function apply(base: Buffer, edits: readonly Edit[]): Buffer {
  let bytes = base;
  for (const e of edits) {
    const at = e.at % (bytes.length + 1);
    switch (e.op) {
      case 'insert':
        bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(e.text, 'latin1'), bytes.subarray(at)]);
        break;
      case 'remove':
        bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + e.count)]);
        break;
      case 'byte':
        if (at < bytes.length) bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([e.value]), bytes.subarray(at + 1)]);
        break;
      case 'duplicate-line': {
        const text = bytes.toString('latin1');
        const start = text.lastIndexOf('\r\n', at) + 2;
        const end = text.indexOf('\r\n', start);
        if (start >= 2 && end > start) bytes = Buffer.concat([bytes.subarray(0, end + 2), bytes.subarray(start, end + 2), bytes.subarray(end + 2)]);
        break;
      }
      case 'huge': {
        const filler = e.header ? `X-Huge: ${'v'.repeat(e.size)}\r\n` : 'a'.repeat(e.size);
        bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(filler), bytes.subarray(at)]);
        break;
      }
    }
  }
  return bytes;
}

/** Cuts `bytes` at the given points: separate writes the listener sees one by one. */
function split(bytes: Buffer, points: readonly number[]): Buffer[] {
  const cuts = [...new Set(points.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const cut of cuts) {
    if (cut > from) chunks.push(bytes.subarray(from, cut));
    from = Math.max(from, cut);
  }
  if (from < bytes.length) chunks.push(bytes.subarray(from));
  return chunks;
}

const connection: fc.Arbitrary<StoredConnection> = fc
  .record({
    base: fc.nat({ max: BASES.length - 1 }),
    // Unchanged and lightly changed requests often: they are the ones that reach the apps.
    edits: fc.oneof(fc.constant([]), fc.array(edit, { minLength: 1, maxLength: 1 }), fc.array(edit, { maxLength: 5 })),
    splits: fc.array(fc.nat(), { maxLength: 4 }),
  })
  .map(({ base, edits, splits }) => split(apply(Buffer.from(BASES[base]!, 'latin1'), edits), splits).map((c) => c.toString('base64')));

fuzzLiveMesh('listener-http1', connection, 6);
