/*
 * What HTTP/1.1 requests and responses share on the wire (RFC 9112): a head
 * ended by an empty line, then a body framed by Content-Length, by chunks, or
 * (responses only) by the connection's close. The request parser of the
 * listeners (./h1-request-parser.ts) and the response parser of the upstream
 * connections (./h1-response-parser.ts) read heads their own way and share
 * the rest here: the buffering, bounded wherever it waits for a line end, and
 * the body states, strict where two parsers could disagree on where a message
 * ends (CRLF after chunk data, one chunk-size grammar, bounded lines).
 */

/** How the body after a head is framed; `skip`: the head was informational (1xx), another head follows. */
export type BodyFraming =
  | { readonly kind: 'none' | 'chunked' | 'until-close' | 'skip' }
  | { readonly kind: 'length'; readonly length: number }
  /** The head's reader took the whole body (`length` bytes right after the head) with the head: skipped, the message ends. */
  | { readonly kind: 'taken'; readonly length: number };

/** The framings that carry no length: one shared object each, nothing allocated per message. */
export const FRAMING = Object.freeze({
  none: Object.freeze({ kind: 'none' }),
  chunked: Object.freeze({ kind: 'chunked' }),
  untilClose: Object.freeze({ kind: 'until-close' }),
  skip: Object.freeze({ kind: 'skip' }),
} as const);

/** Why bytes were refused: `too_large` for a head or trailer section over its limit, `malformed` for the rest. */
export type FramingFault = 'too_large' | 'malformed';

/** RFC 9110 tchar, by character code: what a field name is made of. */
const TOKEN_CHARS = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TOKEN_CHARS[c.charCodeAt(0)] = 1;

/** Whether `text[from, to)` is a token (RFC 9110 §5.6.2): a field name or a method. */
export function isToken(text: string, from = 0, to = text.length): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c > 127 || TOKEN_CHARS[c] === 0) return false;
  }
  return true;
}

/** What isFieldText refuses, as one expression: a control character but HTAB, DEL, anything beyond latin1. */
const NOT_FIELD_TEXT = /[\x00-\x08\x0a-\x1f\x7f\u0100-\uffff]/;

/**
 * Whether `text[from, to)` may stand in a field value or a reason phrase: no
 * control character but HTAB (a CR or LF among them would split a message),
 * nothing beyond latin1; obs-text (0x80-0xFF) is allowed. Heads are read and
 * written on every call. A range of a head being parsed is read by character
 * code (no slice made for it); a whole value about to be written by the
 * expression: such values are mostly slices of the head they were parsed
 * from, which charCodeAt reads one indirection at a time, and the longest (a
 * bearer token, a trace context) go faster through compiled code (~0.55
 * against ~0.9 µs for an Authorization, a traceparent and a content type in a
 * micro-benchmark).
 */
export function isFieldText(text: string, from = 0, to = text.length): boolean {
  if (from === 0 && to === text.length) return !NOT_FIELD_TEXT.test(text);
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if ((c < 32 && c !== 9) || c === 127 || c > 255) return false;
  }
  return true;
}

const CLOSE = /(?:^|,)[\t ]*close[\t ]*(?:,|$)/i;
const KEEP_ALIVE = /(?:^|,)[\t ]*keep-alive[\t ]*(?:,|$)/i;

/**
 * Whether a message's `Connection` field lets its connection carry another
 * message (RFC 9112 §9.3): HTTP/1.1 unless it says close, HTTP/1.0 only if it
 * says keep-alive.
 */
export function keepsConnection(connection: string | readonly string[] | undefined, http10: boolean): boolean {
  if (connection === undefined) return !http10; // most messages: no field, no pattern to run
  const value = typeof connection === 'string' ? connection : connection.join(',');
  return http10 ? KEEP_ALIVE.test(value) : !CLOSE.test(value);
}

/**
 * How the body of a message with these framing fields is delimited, or
 * undefined when it declares none (RFC 9112 §6.3). Strict where two parsers
 * could disagree: not both fields, `chunked` as the only transfer coding and
 * only in HTTP/1.1, one Content-Length of digits.
 */
export function declaredFraming(
  transferEncoding: string | string[] | undefined,
  contentLength: string | string[] | undefined,
  http10: boolean,
  fail: (reason: string) => Error,
): BodyFraming | undefined {
  if (transferEncoding !== undefined) {
    if (contentLength !== undefined) throw fail('both Transfer-Encoding and Content-Length');
    if (http10) throw fail('Transfer-Encoding in an HTTP/1.0 message');
    if (typeof transferEncoding !== 'string' || transferEncoding.toLowerCase() !== 'chunked') throw fail('Transfer-Encoding other than chunked');
    return FRAMING.chunked;
  }
  if (contentLength === undefined) return undefined;
  if (typeof contentLength !== 'string' || !CONTENT_LENGTH.test(contentLength)) throw fail('invalid Content-Length');
  return { kind: 'length', length: Number(contentLength) };
}

const CHUNK_SIZE = /^([0-9A-Fa-f]{1,12})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?$/;
/** A chunk-size line with its extensions; llhttp and Node allow no more in practice. */
const MAX_CHUNK_LINE = 4096;
const CONTENT_LENGTH = /^\d{1,15}$/;

/**
 * Calls `field` for each field line of `text` (latin1, CRLF between lines,
 * none at the end) from `from` on, checked first: a token name right before
 * the colon (no obs-fold, no whitespace before it), no control character but
 * HTAB in the value (a bare CR or LF among them), obs-text allowed; the value
 * without its surrounding whitespace. Scanned by character code, not with a
 * regular expression per line: a head is parsed on every call.
 */
export function forEachField(text: string, from: number, fail: (reason: string) => Error, field: (name: string, value: string) => void): void {
  let at = from;
  while (at < text.length) {
    let eol = text.indexOf('\r\n', at);
    if (eol < 0) eol = text.length;
    const colon = text.indexOf(':', at);
    if (colon <= at || colon > eol || !isToken(text, at, colon)) throw fail('invalid header line');
    let start = colon + 1;
    let end = eol;
    while (start < end && (text.charCodeAt(start) === 32 || text.charCodeAt(start) === 9)) start++;
    while (end > start && (text.charCodeAt(end - 1) === 32 || text.charCodeAt(end - 1) === 9)) end--;
    if (!isFieldText(text, start, end)) throw fail('invalid character in a header value');
    field(text.slice(at, colon), text.slice(start, end));
    at = eol + 2;
  }
}

type State = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailers' | 'until-close' | 'done';

export abstract class H1MessageParser {
  #state: State = 'head';
  #buffer: Buffer | undefined;
  /** Whether the bytes being parsed are execute's input itself (borrowed), not a join of held bytes and it (the parser's own). */
  #borrowed = false;
  #remaining = 0;
  readonly #maxHeadBytes: number;
  readonly #what: string;

  /** `what`: the message's name in refusals ('request' or 'response'). */
  constructor(maxHeadBytes: number, what: string) {
    this.#maxHeadBytes = maxHeadBytes;
    this.#what = what;
  }

  /** The error a refusal throws. */
  protected abstract fault(kind: FramingFault, reason: string): Error;
  /**
   * Reads a head (its text without the empty line that ends it) and says how its body is framed;
   * `input` from `bodyAt` on holds what came after the head in the same read.
   */
  protected abstract readHead(text: string, input: Buffer, bodyAt: number): BodyFraming;
  /** A body chunk, the parser's own copy (execute's input is borrowed). */
  protected abstract readData(chunk: Buffer): void;
  /** The message is whole; `trailers`: the trailer section's text, when there was one. */
  protected abstract readEnd(trailers: string | undefined): void;
  /** Bytes after the end of the message: handed back by `execute`, or refused. */
  protected abstract afterEnd(rest: Buffer): Buffer | undefined;
  /** Requests: at least one empty line before a request line is ignored (RFC 9112 §2.2). */
  protected skipsLeadingEmptyLines = false;

  /** Whether the current message is whole. */
  get done(): boolean {
    return this.#state === 'done';
  }

  /** Whether part of a head is held. */
  get inHead(): boolean {
    return this.#state === 'head' && this.#buffer !== undefined;
  }

  /** Whether the bytes so far leave the message unfinished only because more may come (a close now ends an until-close body). */
  get readsUntilClose(): boolean {
    return this.#state === 'until-close';
  }

  /** Ready for the next message's head. */
  protected restart(): void {
    this.#state = 'head';
    this.#buffer = undefined;
  }

  /** The connection closed: ends an until-close body; any other unfinished message is left as it is. */
  close(): void {
    if (this.#state === 'until-close') this.#finish(undefined);
  }

  /**
   * Feeds bytes; throws `fault`'s error. Stops where the message ends and returns what `afterEnd` makes of
   * the rest. `input` is borrowed, valid only during the call (a read buffer shared by many sockets and read
   * into again: ./socket-reads.ts): body chunks are handed on as copies and what waits here for more bytes
   * (a head, a chunk line) is copied before the call returns, both only where they are still views of
   * `input` (after held bytes the parser joins them with it into a buffer of its own); what `afterEnd`
   * gets is a view.
   */
  execute(input: Buffer): Buffer | undefined {
    const rest = this.#run(input);
    if (this.#buffer !== undefined) this.#buffer = this.#own(this.#buffer);
    return rest;
  }

  /** A view of the bytes being parsed, as bytes that outlive execute: copied when they are its borrowed input. */
  #own(view: Buffer): Buffer {
    return this.#borrowed ? Buffer.from(view) : view;
  }

  #run(input: Buffer): Buffer | undefined {
    this.#borrowed = this.#buffer === undefined;
    const chunk = this.#borrowed ? input : Buffer.concat([this.#buffer!, input]);
    this.#buffer = undefined;
    let at = 0;
    while (at < chunk.length) {
      switch (this.#state) {
        case 'head': {
          if (this.skipsLeadingEmptyLines) {
            while (at < chunk.length && (chunk[at] === 13 || chunk[at] === 10)) {
              if (chunk[at] === 13) {
                // A CR at the end of a read waits for the next byte: a split must not decide whether it is bare.
                if (at + 1 === chunk.length) {
                  this.#buffer = chunk.subarray(at);
                  return undefined;
                }
                if (chunk[at + 1] !== 10) throw this.fault('malformed', 'bare CR');
              }
              at++;
            }
            if (at === chunk.length) return undefined;
          }
          const end = this.#find(chunk, at, '\r\n\r\n', this.#maxHeadBytes, `${this.#what} head`, 'too_large');
          if (end < 0) return undefined;
          const framing = this.readHead(chunk.toString('latin1', at, end), chunk, end + 4);
          at = end + 4;
          if (framing.kind === 'taken') {
            at += framing.length;
            this.#finish(undefined);
          } else this.#frame(framing);
          break;
        }
        case 'length':
          at = this.#take(chunk, at);
          if (this.#remaining === 0) this.#finish(undefined);
          break;
        case 'until-close':
          this.readData(this.#own(at === 0 ? chunk : chunk.subarray(at)));
          return undefined;
        case 'chunk-size': {
          const end = this.#find(chunk, at, '\r\n', MAX_CHUNK_LINE, 'chunk-size line', 'malformed');
          if (end < 0) return undefined;
          const match = CHUNK_SIZE.exec(chunk.toString('latin1', at, end));
          if (!match) throw this.fault('malformed', 'invalid chunk size line');
          this.#remaining = Number.parseInt(match[1]!, 16);
          at = end + 2;
          this.#state = this.#remaining === 0 ? 'trailers' : 'chunk-data';
          break;
        }
        case 'chunk-data':
          at = this.#take(chunk, at);
          if (this.#remaining === 0) this.#state = 'chunk-end';
          break;
        case 'chunk-end':
          if (chunk.length - at < 2) {
            this.#buffer = chunk.subarray(at);
            return undefined;
          }
          if (chunk[at] !== 13 || chunk[at + 1] !== 10) throw this.fault('malformed', 'chunk data not followed by CRLF');
          at += 2;
          this.#state = 'chunk-size';
          break;
        case 'trailers': {
          // Either CRLF at once (no trailers) or field lines ending with an empty line.
          if (chunk.length - at >= 2 && chunk[at] === 13 && chunk[at + 1] === 10) {
            at += 2;
            this.#finish(undefined);
            break;
          }
          const end = this.#find(chunk, at, '\r\n\r\n', this.#maxHeadBytes, 'trailer section', 'too_large');
          if (end < 0) return undefined;
          const trailers = chunk.toString('latin1', at, end);
          at = end + 4;
          this.#finish(trailers);
          break;
        }
        case 'done':
          return this.afterEnd(at === 0 ? chunk : chunk.subarray(at));
      }
    }
    return undefined;
  }

  #frame(framing: BodyFraming): void {
    switch (framing.kind) {
      case 'skip':
        return; // still 'head'
      case 'none':
        return this.#finish(undefined);
      case 'chunked':
        this.#state = 'chunk-size';
        return;
      case 'until-close':
        this.#state = 'until-close';
        return;
      case 'length':
        this.#remaining = framing.length;
        if (framing.length === 0) this.#finish(undefined);
        else this.#state = 'length';
    }
  }

  #finish(trailers: string | undefined): void {
    this.#state = 'done';
    this.readEnd(trailers);
  }

  /** Hands on up to #remaining body bytes from `at`; returns where the next unread byte is. */
  #take(chunk: Buffer, at: number): number {
    const take = Math.min(this.#remaining, chunk.length - at);
    this.#remaining -= take;
    this.readData(this.#own(take === chunk.length ? chunk : chunk.subarray(at, at + take)));
    return at + take;
  }

  /**
   * Where `terminator` ends the line or section that starts at `at`, or -1 when it has not arrived yet
   * (the rest is held). Bounded whether it comes in pieces or in one read: a peer cannot grow it
   * without end.
   */
  #find(chunk: Buffer, at: number, terminator: string, limit: number, what: string, kind: FramingFault): number {
    const end = chunk.indexOf(terminator, at, 'latin1');
    if (end < 0) {
      if (chunk.length - at > limit) throw this.fault(kind, `${what} longer than ${limit} bytes`);
      this.#buffer = at === 0 ? chunk : chunk.subarray(at);
      return -1;
    }
    if (end - at > limit) throw this.fault(kind, `${what} larger than ${limit} bytes`);
    return end;
  }
}
