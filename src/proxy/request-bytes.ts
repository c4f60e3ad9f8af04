import type { Readable } from 'node:stream';
import { requestBody } from './call.ts';
import { H1Request } from './h1-server-request.ts';
import type { DownstreamRequest } from './listener.ts';

const NONE = (): number => 0;

/**
 * Counts the request body bytes the codec delivers, without touching the
 * stream's flow: both node:http's parser and the HTTP/2 compatibility layer
 * hand every body chunk to the request's own `push`, so wrapping `push` on
 * this one request sees each chunk once, whoever reads the body (the
 * upstream, a filter that buffers it, or nobody). No 'data' listener (which
 * would switch the stream to flowing mode before the upstream is attached),
 * no extra Transform (a copy stage per chunk). Requests without a body pay
 * nothing.
 */
export function countRequestBytes(req: DownstreamRequest): () => number {
  if (requestBody(req) === null) return NONE;
  // meshgate's own codec counts what it receives (a body that came with its head never goes through push).
  if (req instanceof H1Request) return () => req.bodyBytes;
  const stream = req as unknown as Readable;
  const push = stream.push;
  let bytes = 0;
  stream.push = function countingPush(this: Readable, chunk: unknown, encoding?: BufferEncoding): boolean {
    if (chunk !== null && chunk !== undefined) bytes += typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : (chunk as Uint8Array).byteLength;
    return push.call(this, chunk, encoding);
  };
  return () => bytes;
}
