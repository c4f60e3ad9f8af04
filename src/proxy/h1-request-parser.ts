import type { ReasonCode } from '../core/reason-codes.ts';
import { TOKEN_CHARS } from './h1-response-parser.ts';

/*
 * The HTTP/1.1 request parser of the sidecar's listeners (./h1-server-connection.ts),
 * fed the bytes of one downstream connection as they arrive.
 *
 * Why by hand: node:http's server (llhttp, IncomingMessage, ServerResponse and
 * their streams) costs a hop about 22 µs per request on this VM against 12-14 µs
 * for the same bytes on a bare socket (bench/README.md, "Cost per pod"), and
 * Node exposes no request parser of its own to user code. Strict where two
 * parsers could frame a request differently (RFC 9112 §6.3, §11.2: request
 * smuggling): a request line of three parts with single spaces, CRLF line ends
 * only, no obs-fold, no whitespace before a colon, no Content-Length with
 * Transfer-Encoding, one Content-Length, `chunked` as the only transfer coding,
 * bounded heads, chunk lines and trailer sections.
 */

/** Why a request's bytes were refused: answered with this reason code (400 or 431), then the connection closes. */
export class RequestFramingError extends Error {
  override readonly name = 'RequestFramingError';
  readonly reasonCode: ReasonCode<'data'>;
  constructor(reasonCode: ReasonCode<'data'>, reason: string) {
    super(reason);
    this.reasonCode = reasonCode;
  }
}

export interface RequestHead {
  readonly method: string;
  readonly url: string;
  /** 1 for HTTP/1.1, 0 for HTTP/1.0. */
  readonly minorVersion: number;
  /** Names as sent and values, alternating, as node:http's rawHeaders. */
  readonly rawHeaders: string[];
  /** Lower-case names; repeated fields joined as node:http does with joinDuplicateHeaders (`; ` for cookie, an array for set-cookie). */
  readonly headers: Record<string, string | string[]>;
  /** Whether a body follows (a Content-Length above 0, or chunked). */
  readonly hasBody: boolean;
  /** Whether the connection may carry another request after this one. */
  readonly keepAlive: boolean;
  /** `Expect: 100-continue`: the caller waits for a 100 before it sends the body. */
  readonly expectsContinue: boolean;
}

export interface RequestSink {
  /** A request head is in; its body (if any) follows through onBody. */
  onHead(head: RequestHead): void;
  onBody(chunk: Buffer): void;
  /** The request is whole (trailers, if any, read and dropped: meshgate does not forward request trailers). */
  onComplete(): void;
}

export interface RequestParserLimits {
  /** The largest head (request line and fields), and the largest trailer section, in bytes. */
  readonly maxHeaderSize: number;
  readonly maxHeadersCount: number;
}

/** RFC 9112 §3: method SP request-target SP HTTP-version, one space each; HTTP/1.0 and HTTP/1.1 only. */
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^\x00-\x20\x7f]+) HTTP\/1\.([01])$/;
const TARGET_FORM = /^(?:\/|[A-Za-z][A-Za-z0-9+.-]*:\/\/|\*$)/;
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,12})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?$/;
const CONTENT_LENGTH = /^\d{1,15}$/;
/** A chunk-size line with its extensions (node's parser refuses extensions beyond 16 KiB; we stop earlier). */
const MAX_CHUNK_LINE = 4096;

const malformed = (reason: string): RequestFramingError => new RequestFramingError('request.malformed', reason);

type State = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailers' | 'done';

export class RequestParser {
  #state: State = 'head';
  #buffer: Buffer | undefined;
  #remaining = 0;
  readonly #sink: RequestSink;
  readonly #limits: RequestParserLimits;

  constructor(sink: RequestSink, limits: RequestParserLimits) {
    this.#sink = sink;
    this.#limits = limits;
  }

  /** Whether the current request is whole (the parser takes no more bytes until `next`). */
  get done(): boolean {
    return this.#state === 'done';
  }

  /** Whether part of a head has arrived (for the head's deadline). */
  get inHead(): boolean {
    return this.#state === 'head' && this.#buffer !== undefined;
  }

  /** Ready for the next request on the connection. */
  next(): void {
    this.#state = 'head';
  }

  /**
   * Feeds bytes; throws RequestFramingError. Stops where the current request
   * ends and returns the bytes after it (a pipelined request), which the
   * caller hands back once it is ready for them.
   */
  execute(input: Buffer): Buffer | undefined {
    const chunk = this.#buffer === undefined ? input : Buffer.concat([this.#buffer, input]);
    this.#buffer = undefined;
    let at = 0;
    while (at < chunk.length) {
      switch (this.#state) {
        case 'head': {
          // At least one empty line before a request line is ignored (RFC 9112 §2.2).
          while (at < chunk.length && (chunk[at] === 13 || chunk[at] === 10)) {
            if (chunk[at] === 13 && at + 1 < chunk.length && chunk[at + 1] !== 10) throw malformed('bare CR');
            at++;
          }
          if (at === chunk.length) return undefined;
          const end = this.#find(chunk, at, '\r\n\r\n', this.#limits.maxHeaderSize, 'request head', 'request.headers_too_large');
          if (end < 0) return undefined;
          const head = this.#head(chunk.toString('latin1', at, end));
          at = end + 4;
          this.#sink.onHead(head);
          // #head set the state: 'done' for a request without a body.
          if ((this.#state as State) === 'done') this.#sink.onComplete();
          break;
        }
        case 'length':
          at = this.#take(chunk, at);
          if (this.#remaining === 0) this.#complete();
          break;
        case 'chunk-size': {
          const end = this.#find(chunk, at, '\r\n', MAX_CHUNK_LINE, 'chunk-size line', 'request.malformed');
          if (end < 0) return undefined;
          const match = CHUNK_SIZE.exec(chunk.toString('latin1', at, end));
          if (!match) throw malformed('invalid chunk size line');
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
          if (chunk[at] !== 13 || chunk[at + 1] !== 10) throw malformed('chunk data not followed by CRLF');
          at += 2;
          this.#state = 'chunk-size';
          break;
        case 'trailers': {
          if (chunk.length - at >= 2 && chunk[at] === 13 && chunk[at + 1] === 10) {
            at += 2;
            this.#complete();
            break;
          }
          const end = this.#find(chunk, at, '\r\n\r\n', this.#limits.maxHeaderSize, 'trailer section', 'request.headers_too_large');
          if (end < 0) return undefined;
          // Checked like any field line (a bad one is as suspect here), then dropped.
          readFields(chunk.toString('latin1', at, end), 0, this.#limits.maxHeadersCount, []);
          at = end + 4;
          this.#complete();
          break;
        }
        case 'done':
          return at === 0 ? chunk : chunk.subarray(at);
      }
    }
    return undefined;
  }

  #complete(): void {
    this.#state = 'done';
    this.#sink.onComplete();
  }

  #take(chunk: Buffer, at: number): number {
    const take = Math.min(this.#remaining, chunk.length - at);
    this.#remaining -= take;
    this.#sink.onBody(take === chunk.length ? chunk : chunk.subarray(at, at + take));
    return at + take;
  }

  /** Where `terminator` ends what starts at `at`, or -1 when it has not arrived yet (the rest is held, bounded by `limit`). */
  #find(chunk: Buffer, at: number, terminator: string, limit: number, what: string, code: ReasonCode<'data'>): number {
    const end = chunk.indexOf(terminator, at, 'latin1');
    if (end < 0) {
      if (chunk.length - at > limit) throw new RequestFramingError(code, `${what} larger than ${limit} bytes`);
      this.#buffer = at === 0 ? chunk : chunk.subarray(at);
      return -1;
    }
    if (end - at > limit) throw new RequestFramingError(code, `${what} larger than ${limit} bytes`);
    return end;
  }

  #head(text: string): RequestHead {
    let lineEnd = text.indexOf('\r\n');
    if (lineEnd < 0) lineEnd = text.length;
    const line = REQUEST_LINE.exec(text.slice(0, lineEnd));
    if (!line) throw malformed('request line must be a method, a target and HTTP/1.1 or HTTP/1.0, separated by single spaces');
    // A tunnel (authority-form target) is not a call meshgate can check or forward.
    if (line[1] === 'CONNECT') throw new RequestFramingError('request.unsupported', 'CONNECT is not forwarded');
    // Origin-form, absolute-form or asterisk-form (RFC 9112 §3.2); anything else is not a request we can frame.
    if (!TARGET_FORM.test(line[2]!)) throw malformed('request target must be a path, an absolute URL or *');
    const rawHeaders: string[] = [];
    const headers = readFields(text, lineEnd + 2, this.#limits.maxHeadersCount, rawHeaders);
    const minorVersion = line[3] === '1' ? 1 : 0;
    const method = line[1]!;
    const te = headers['transfer-encoding'];
    const cl = headers['content-length'];
    let hasBody = false;
    if (te !== undefined) {
      if (cl !== undefined) throw malformed('both Transfer-Encoding and Content-Length');
      if (minorVersion === 0) throw malformed('Transfer-Encoding in an HTTP/1.0 request');
      if (typeof te !== 'string' || te.toLowerCase() !== 'chunked') throw malformed('Transfer-Encoding other than chunked');
      this.#state = 'chunk-size';
      hasBody = true;
    } else if (cl !== undefined) {
      if (typeof cl !== 'string' || !CONTENT_LENGTH.test(cl)) throw malformed('invalid Content-Length');
      this.#remaining = Number(cl);
      hasBody = this.#remaining > 0;
      this.#state = hasBody ? 'length' : 'done';
    } else {
      this.#state = 'done';
    }
    const connection = headers.connection;
    const tokens = connection === undefined ? '' : (typeof connection === 'string' ? connection : connection.join(',')).toLowerCase();
    const keepAlive = minorVersion === 1 ? !/(?:^|,)[\t ]*close[\t ]*(?:,|$)/.test(tokens) : /(?:^|,)[\t ]*keep-alive[\t ]*(?:,|$)/.test(tokens);
    const expect = headers.expect;
    return {
      method,
      url: line[2]!,
      minorVersion,
      rawHeaders,
      headers,
      hasBody,
      keepAlive,
      expectsContinue: hasBody && typeof expect === 'string' && expect.toLowerCase() === '100-continue',
    };
  }
}

/**
 * Field lines of `text` (latin1, CRLF between lines, none at the end) from
 * `from` on: pushed to `raw` as sent, and returned in node:http's shape.
 * Scanned by character code, as the response parser's (a head is parsed on
 * every call). Two Content-Length fields are refused even when equal: the
 * request is the caller's, and a sender that repeats it is not one we trust.
 */
function readFields(text: string, from: number, maxCount: number, raw: string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  let at = from;
  let count = 0;
  while (at < text.length) {
    let eol = text.indexOf('\r\n', at);
    if (eol < 0) eol = text.length;
    if (++count > maxCount) throw new RequestFramingError('request.headers_too_large', `more than ${maxCount} header fields`);
    const colon = text.indexOf(':', at);
    // Also refuses obs-fold (a line that starts with whitespace), whitespace before the colon and a bare LF.
    if (colon <= at || colon > eol) throw malformed('invalid header line');
    for (let i = at; i < colon; i++) {
      const c = text.charCodeAt(i);
      if (c > 127 || TOKEN_CHARS[c] === 0) throw malformed('invalid header name');
    }
    let start = colon + 1;
    let end = eol;
    while (start < end && (text.charCodeAt(start) === 32 || text.charCodeAt(start) === 9)) start++;
    while (end > start && (text.charCodeAt(end - 1) === 32 || text.charCodeAt(end - 1) === 9)) end--;
    for (let i = start; i < end; i++) {
      const c = text.charCodeAt(i);
      // CTLs but HTAB (a bare CR or LF among them) and DEL; obs-text (0x80-0xFF) is allowed.
      if ((c < 32 && c !== 9) || c === 127) throw malformed('invalid character in a header value');
    }
    const name = text.slice(at, colon);
    const value = text.slice(start, end);
    raw.push(name, value);
    const lower = name.toLowerCase();
    const existing = out[lower];
    if (existing === undefined) out[lower] = lower === 'set-cookie' ? [value] : value;
    else if (lower === 'content-length') throw malformed('more than one Content-Length');
    else if (Array.isArray(existing)) existing.push(value);
    else out[lower] = `${existing}${lower === 'cookie' ? '; ' : ', '}${value}`;
    at = eol + 2;
  }
  return out;
}
