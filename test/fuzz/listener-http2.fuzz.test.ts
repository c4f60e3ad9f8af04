import fc from 'fast-check';
import { CLIENT_PREFACE, Flag, FrameType, frame, headerBlock, settingsPayload, u32 } from '../helpers/h2-frames.ts';
import type { StoredConnection } from './live-mesh.ts';
import { fuzzLiveMesh, OUTBOUND_HOST } from './live-mesh.ts';

/*
 * A live sidecar (child process) fed random HTTP/2 frame sequences (h2c,
 * prior knowledge) on its inbound and outbound listeners: requests whose
 * headers are split over CONTINUATION frames, padded, prioritised, with
 * forbidden or malformed fields, DATA beyond the window, and SETTINGS, PING,
 * RST_STREAM, WINDOW_UPDATE, PRIORITY, GOAWAY, PUSH_PROMISE and unknown frames
 * with random flags, stream ids and lying lengths. After each batch: /ready
 * answers 200 within 1 s, and the apps saw only well-formed requests, each
 * one the reference listener also parsed from the same bytes (live-mesh.ts).
 */

const STREAM_IDS = [1, 3, 5, 7, 9, 0, 2, 4, 0x7fffffff, 0x80000001, 101];

const PATHS = [
  '/orders/1',
  '/orders?x=1',
  '/public/a',
  '/admin',
  '/admin/users',
  '/public/../admin',
  '/public/%2e%2e/admin',
  '/a%2Fb',
  '//x',
  '*',
  '',
  'orders',
  '/é',
  '/a b',
  '/a\u0000b',
  '/ok#frag',
];
const METHODS = ['GET', 'POST', 'HEAD', 'OPTIONS', 'DELETE', 'CONNECT', 'get', 'G T', ''];
const EXTRA_FIELDS: Array<[string, string]> = [
  ['content-type', 'application/json'],
  ['content-length', '5'],
  ['content-length', '0'],
  ['content-length', '99999'],
  ['content-length', 'x'],
  ['content-length', '-1'],
  ['transfer-encoding', 'chunked'],
  ['connection', 'close'],
  ['keep-alive', '5'],
  ['upgrade', 'h2c'],
  ['te', 'trailers'],
  ['te', 'gzip'],
  ['host', 'other'],
  ['host', OUTBOUND_HOST],
  ['Upper-Case', 'x'],
  ['x-crlf', 'v\r\nx-injected: 1'],
  ['x-nul', 'a\u0000b'],
  ['x-space ', 'v'],
  ['', 'empty-name'],
  [':method', 'POST'],
  [':path', '/admin'],
  [':status', '200'],
  [':protocol', 'websocket'],
  [':unknown', 'x'],
  ['cookie', 'a=1'],
  ['cookie', 'b=2'],
  ['x-request-id', 'fuzz'],
  ['x-forwarded-for', '203.0.113.9'],
  ['x-huge', 'v'.repeat(20_000)],
  ['authorization', 'Bearer a.b.c'],
  ['grpc-timeout', '1S'],
  ['content-type', 'application/grpc'],
];

interface RequestSpec {
  kind: 'request';
  /** 'next': the next odd id of the connection, as a client would pick; else this id. */
  stream: number | 'next';
  method: string;
  path: string;
  authority: string | undefined;
  scheme: string | undefined;
  extra: Array<[string, string]>;
  /** Regular fields before the pseudo-fields (malformed, RFC 9113 §8.3). */
  pseudoLast: boolean;
  /** Header block split over this many CONTINUATION frames. */
  continuations: number;
  endHeaders: boolean;
  padded: number | undefined;
  priority: boolean;
  data: number[];
  endStream: 'headers' | 'data' | 'never';
}

interface RawSpec {
  kind: 'raw';
  type: number;
  flags: number;
  stream: number;
  payload: string;
  /** A declared length other than the payload's. */
  lie: number | undefined;
}

type FrameSpec = RequestSpec | RawSpec;

const request: fc.Arbitrary<RequestSpec> = fc.record({
  kind: fc.constant('request' as const),
  stream: fc.oneof({ weight: 8, arbitrary: fc.constant('next' as const) }, { weight: 1, arbitrary: fc.constantFrom(...STREAM_IDS) }),
  method: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('GET', 'POST') }, { weight: 1, arbitrary: fc.constantFrom(...METHODS) }),
  path: fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom('/orders/1', '/public/a', '/orders?x=1') },
    { weight: 2, arbitrary: fc.constantFrom(...PATHS) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 20 }).map((s) => `/${s}`) },
  ),
  authority: fc.oneof({ weight: 5, arbitrary: fc.constant(OUTBOUND_HOST) }, { weight: 1, arbitrary: fc.constantFrom(undefined, '', 'other', `${OUTBOUND_HOST}:80`, 'a b', 'x\r\ny') }),
  scheme: fc.oneof({ weight: 5, arbitrary: fc.constant('http') }, { weight: 1, arbitrary: fc.constantFrom(undefined, 'https', '', 'ftp') }),
  extra: fc.oneof({ weight: 3, arbitrary: fc.constant<Array<[string, string]>>([]) }, { weight: 2, arbitrary: fc.array(fc.constantFrom(...EXTRA_FIELDS), { maxLength: 4 }) }),
  pseudoLast: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  continuations: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }) }),
  endHeaders: fc.oneof({ weight: 19, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  padded: fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }),
  priority: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  data: fc.oneof({ weight: 3, arbitrary: fc.constant<number[]>([]) }, { weight: 1, arbitrary: fc.array(fc.constantFrom(0, 1, 5, 100, 16_384, 70_000), { maxLength: 3 }) }),
  endStream: fc.constantFrom('headers' as const, 'headers' as const, 'data' as const, 'never' as const),
});

const raw: fc.Arbitrary<RawSpec> = fc.oneof(
  fc.record({
    kind: fc.constant('raw' as const),
    type: fc.oneof(fc.constantFrom(...Object.values(FrameType)), fc.integer({ min: 0, max: 255 })),
    flags: fc.oneof(fc.constantFrom(0, Flag.ACK, Flag.END_HEADERS, Flag.PADDED, Flag.PRIORITY), fc.integer({ min: 0, max: 255 })),
    stream: fc.oneof(fc.constantFrom(...STREAM_IDS), fc.nat()),
    payload: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b).toString('base64')),
    lie: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.oneof(fc.integer({ min: 0, max: 80 }), fc.constant(0xffffff), fc.constant(16_385)) }),
  }),
  // Frames with meaningful payloads: settings, pings, window updates, resets, priorities, goaways.
  fc.record({
    kind: fc.constant('raw' as const),
    type: fc.constant(FrameType.SETTINGS),
    flags: fc.constantFrom(0, 0, Flag.ACK),
    stream: fc.constantFrom(0, 0, 1),
    payload: fc
      .array(
        fc.tuple(
          fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 0, max: 0xffff })),
          fc.oneof(fc.constantFrom(0, 1, 16_383, 16_384, 16_777_215, 16_777_216, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1), fc.nat()),
        ),
        { maxLength: 5 },
      )
      .map((entries) => settingsPayload(entries).toString('base64')),
    lie: fc.constant(undefined),
  }),
  fc.record({
    kind: fc.constant('raw' as const),
    type: fc.constantFrom(FrameType.WINDOW_UPDATE, FrameType.RST_STREAM, FrameType.PING, FrameType.PRIORITY, FrameType.GOAWAY),
    flags: fc.constantFrom(0, Flag.ACK),
    stream: fc.constantFrom(0, 1, 3),
    payload: fc
      .tuple(fc.constantFrom(0, 1, 3, 8, 0x7fffffff, 0xffffffff), fc.constantFrom(4, 5, 8))
      .map(([value, size]) => Buffer.concat([u32(value), Buffer.alloc(size - 4, value === 3 ? 3 : 0)]).toString('base64')),
    lie: fc.constant(undefined),
  }),
);

function requestFrames(spec: RequestSpec, stream: number): Buffer[] {
  const pseudo: Array<[string, string]> = [[':method', spec.method]];
  if (spec.scheme !== undefined) pseudo.push([':scheme', spec.scheme]);
  pseudo.push([':path', spec.path]);
  if (spec.authority !== undefined) pseudo.push([':authority', spec.authority]);
  const fields = spec.pseudoLast ? [...spec.extra, ...pseudo] : [...pseudo, ...spec.extra];
  let block = headerBlock(fields);
  const pieces: Buffer[] = [];
  const parts = spec.continuations + 1;
  const size = Math.ceil(block.length / parts);
  for (let i = 0; i < parts; i++) pieces.push(block.subarray(i * size, (i + 1) * size));
  block = pieces[0]!;
  let flags = 0;
  if (spec.endStream === 'headers') flags |= Flag.END_STREAM;
  if (spec.continuations === 0 && spec.endHeaders) flags |= Flag.END_HEADERS;
  let payload = block;
  if (spec.priority) {
    flags |= Flag.PRIORITY;
    // Stream 5 depends on itself: a stream error (RFC 9113 §5.3.1); the others on stream 0.
    payload = Buffer.concat([u32(stream === 5 ? 5 : 0), Buffer.from([15]), payload]);
  }
  if (spec.padded !== undefined) {
    flags |= Flag.PADDED;
    // Padding of the declared length, except a length of 255 claims more than is there (a connection error).
    payload = Buffer.concat([Buffer.from([spec.padded]), payload, Buffer.alloc(spec.padded === 255 ? 3 : spec.padded)]);
  }
  const out = [frame(FrameType.HEADERS, flags, stream, payload)];
  pieces.slice(1).forEach((piece, i) => {
    const last = i === pieces.length - 2;
    out.push(frame(FrameType.CONTINUATION, last && spec.endHeaders ? Flag.END_HEADERS : 0, stream, piece));
  });
  spec.data.forEach((bytes, i) => {
    const last = i === spec.data.length - 1;
    out.push(frame(FrameType.DATA, last && spec.endStream === 'data' ? Flag.END_STREAM : 0, stream, Buffer.alloc(bytes, 0x61)));
  });
  if (spec.data.length === 0 && spec.endStream === 'data') out.push(frame(FrameType.DATA, Flag.END_STREAM, stream, Buffer.alloc(0)));
  return out;
}

/** The bytes of a connection's frames; requests without an id of their own take the next odd one. */
function framesOf(specs: readonly FrameSpec[]): Buffer[] {
  let next = 1;
  return specs.flatMap((spec) => {
    if (spec.kind === 'request') {
      const stream = spec.stream === 'next' ? next : spec.stream;
      if (spec.stream === 'next') next += 2;
      return requestFrames(spec, stream);
    }
    const payload = Buffer.from(spec.payload, 'base64');
    return [frame(spec.type, spec.flags, spec.stream, payload, spec.lie ?? payload.length)];
  });
}

/** Requests a conforming client could send, and control frames that break nothing: these reach the apps. */
const gentleRequest: fc.Arbitrary<RequestSpec> = fc.record({
  kind: fc.constant('request' as const),
  stream: fc.constant('next' as const),
  method: fc.constantFrom('GET', 'POST', 'DELETE'),
  path: fc.constantFrom('/orders/1', '/public/a', '/orders?x=1', '/admin', '/public/%2e%2e/admin'),
  authority: fc.constant(OUTBOUND_HOST),
  scheme: fc.constant('http'),
  extra: fc.constant<Array<[string, string]>>([]),
  pseudoLast: fc.constant(false),
  continuations: fc.integer({ min: 0, max: 2 }),
  endHeaders: fc.constant(true),
  padded: fc.constant(undefined),
  priority: fc.constant(false),
  data: fc.array(fc.constantFrom(1, 100), { maxLength: 2 }),
  endStream: fc.constantFrom('headers' as const, 'data' as const),
});
const gentleControl: fc.Arbitrary<RawSpec> = fc
  .record({
    kind: fc.constant('raw' as const),
    type: fc.constantFrom(FrameType.PING, FrameType.WINDOW_UPDATE),
    flags: fc.constant(0),
    stream: fc.constant(0),
    payload: fc.constant(Buffer.alloc(8, 1).toString('base64')),
    lie: fc.constant(undefined),
  })
  .map((spec) => (spec.type === FrameType.WINDOW_UPDATE ? { ...spec, payload: u32(65_535).toString('base64') } : spec));

const connection: fc.Arbitrary<StoredConnection> = fc
  .record({
    preface: fc.constantFrom('ok', 'ok', 'ok', 'ok', 'no-settings', 'truncated', 'garbled'),
    frames: fc.oneof(
      {
        weight: 1,
        arbitrary: fc.array(fc.oneof({ weight: 3, arbitrary: gentleRequest as fc.Arbitrary<FrameSpec> }, { weight: 1, arbitrary: gentleControl as fc.Arbitrary<FrameSpec> }), {
          minLength: 1,
          maxLength: 4,
        }),
      },
      {
        weight: 2,
        arbitrary: fc.array(fc.oneof({ weight: 3, arbitrary: request as fc.Arbitrary<FrameSpec> }, { weight: 2, arbitrary: raw as fc.Arbitrary<FrameSpec> }), { minLength: 1, maxLength: 8 }),
      },
    ),
    splitEvery: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 64 }) }),
  })
  .map(({ preface, frames, splitEvery }) => {
    const start =
      preface === 'truncated'
        ? CLIENT_PREFACE.subarray(0, 20)
        : preface === 'garbled'
          ? Buffer.concat([CLIENT_PREFACE.subarray(0, 23), Buffer.from('X')])
          : Buffer.concat([CLIENT_PREFACE, preface === 'no-settings' ? Buffer.alloc(0) : frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(0))]);
    const bytes = Buffer.concat([start, ...framesOf(frames)]);
    const chunks: Buffer[] = [];
    const step = splitEvery ?? bytes.length;
    for (let i = 0; i < bytes.length; i += step) chunks.push(bytes.subarray(i, i + step));
    return chunks.map((c) => c.toString('base64'));
  });

fuzzLiveMesh('listener-http2', connection, 5);
