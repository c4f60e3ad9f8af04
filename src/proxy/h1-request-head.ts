import type { Readable } from 'node:stream';
import { isFieldText, isToken } from './h1-message-parser.ts';

/*
 * The head of a request src/proxy/h1-pool.ts writes upstream. The fields come
 * from the listener's parsers and the filters' header changes; each is checked
 * again here, since one CR or LF in a value would let a caller write a second
 * request on a connection other callers share (request splitting).
 */

/** Fields the pool writes itself or a proxy must not forward (hop-by-hop); src/proxy/headers.ts strips them before. */
const REFUSED_FIELDS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'expect']);
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);

/** A request head and whether its body goes chunk-encoded (it has one and no declared length). */
export interface RequestHead {
  readonly head: string;
  readonly chunked: boolean;
}

/** The request line and fields of an HTTP/1.1 request; throws (the caller's request is malformed: 400) on what cannot be written safely. */
export function requestHead(method: string, path: string, headers: Record<string, string | string[] | number | undefined> | null, body: Readable | null | undefined): RequestHead {
  if (!isToken(method)) throw new DispatchFieldError('invalid method');
  if (!/^[\x21-\xff]+$/.test(path)) throw new DispatchFieldError('invalid request target');
  let head = `${method} ${path} HTTP/1.1\r\n`;
  let hasLength = false;
  if (headers) {
    for (const name in headers) {
      const value = headers[name];
      // As undici: a field set to undefined is not sent, a number is written as its digits.
      if (value === undefined || value === null) continue;
      const lower = name.toLowerCase();
      if (!isToken(name) || REFUSED_FIELDS.has(lower)) throw new DispatchFieldError(`header ${name} cannot be sent`);
      if (lower === 'content-length') hasLength = true;
      if (!Array.isArray(value)) head += fieldLine(name, String(value));
      else for (const one of value) head += fieldLine(name, String(one));
    }
  }
  const chunked = body !== null && body !== undefined && !hasLength;
  if (chunked) head += 'transfer-encoding: chunked\r\n';
  else if ((body === null || body === undefined) && !hasLength && BODY_METHODS.has(method)) head += 'content-length: 0\r\n';
  return { head: `${head}\r\n`, chunked };
}

function fieldLine(name: string, text: string): string {
  if (!isFieldText(text)) throw new DispatchFieldError(`invalid value of header ${name}`);
  return `${name}: ${text}\r\n`;
}

/** A field or request line the pool will not write (undici throws InvalidArgumentError for the same). */
class DispatchFieldError extends Error {
  override readonly name = 'DispatchFieldError';
  readonly code = 'UND_ERR_INVALID_ARG';
}
