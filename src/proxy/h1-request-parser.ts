import type { ReasonCode } from '../core/reason-codes.ts';
import type { BodyFraming, FramingFault } from './h1-message-parser.ts';
import { declaredFraming, FRAMING, forEachField, H1MessageParser, keepsConnection } from './h1-message-parser.ts';

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
  /**
   * The whole body (of a declared length), when it came in the same read as the head: most small
   * requests. Nothing goes through onBody then; onComplete follows the head.
   */
  readonly wholeBody: Buffer | undefined;
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

const malformed = (reason: string): RequestFramingError => new RequestFramingError('request.malformed', reason);

export class RequestParser extends H1MessageParser {
  readonly #sink: RequestSink;
  readonly #maxHeadersCount: number;

  constructor(sink: RequestSink, limits: RequestParserLimits) {
    super(limits.maxHeaderSize, 'request');
    this.skipsLeadingEmptyLines = true;
    this.#sink = sink;
    this.#maxHeadersCount = limits.maxHeadersCount;
  }

  /** Ready for the next request on the connection. */
  next(): void {
    this.restart();
  }

  protected fault(kind: FramingFault, reason: string): Error {
    return new RequestFramingError(kind === 'too_large' ? 'request.headers_too_large' : 'request.malformed', reason);
  }

  /** A pipelined request: handed back to the connection, which feeds it once the answer before it is out. */
  protected afterEnd(rest: Buffer): Buffer | undefined {
    return rest;
  }

  protected readData(chunk: Buffer): void {
    this.#sink.onBody(chunk);
  }

  protected readEnd(trailers: string | undefined): void {
    // Checked like any field line (a bad one is as suspect here), then dropped.
    if (trailers !== undefined) readFields(trailers, 0, this.#maxHeadersCount, []);
    this.#sink.onComplete();
  }

  protected readHead(text: string, input: Buffer, bodyAt: number): BodyFraming {
    let lineEnd = text.indexOf('\r\n');
    if (lineEnd < 0) lineEnd = text.length;
    const line = REQUEST_LINE.exec(text.slice(0, lineEnd));
    if (!line) throw malformed('request line must be a method, a target and HTTP/1.1 or HTTP/1.0, separated by single spaces');
    // A tunnel (authority-form target) is not a call meshgate can check or forward.
    if (line[1] === 'CONNECT') throw new RequestFramingError('request.unsupported', 'CONNECT is not forwarded');
    // Origin-form, absolute-form or asterisk-form (RFC 9112 §3.2); anything else is not a request we can frame.
    if (!TARGET_FORM.test(line[2]!)) throw malformed('request target must be a path, an absolute URL or *');
    const rawHeaders: string[] = [];
    const headers = readFields(text, lineEnd + 2, this.#maxHeadersCount, rawHeaders);
    const minorVersion = line[3] === '1' ? 1 : 0;
    const http10 = minorVersion === 0;
    const framing = declaredFraming(headers['transfer-encoding'], headers['content-length'], http10, malformed) ?? FRAMING.none;
    const hasBody = framing.kind === 'chunked' || (framing.kind === 'length' && framing.length > 0);
    const keepAlive = keepsConnection(headers.connection, http10);
    const expect = headers.expect;
    const expectsContinue = hasBody && typeof expect === 'string' && expect.toLowerCase() === '100-continue';
    // Copied: the read's buffer is the listeners' shared one, read into again for the next read (./socket-reads.ts).
    const wholeBody = framing.kind === 'length' && framing.length > 0 && input.length - bodyAt >= framing.length ? Buffer.from(input.subarray(bodyAt, bodyAt + framing.length)) : undefined;
    this.#sink.onHead({ method: line[1]!, url: line[2]!, minorVersion, rawHeaders, headers, hasBody, keepAlive, expectsContinue, wholeBody });
    return wholeBody === undefined ? framing : { kind: 'taken', length: wholeBody.length };
  }
}

/**
 * Field lines of `text` from `from` on (./h1-message-parser.ts checks them):
 * pushed to `raw` as sent, and returned in node:http's shape. Two
 * Content-Length fields are refused even when equal: the request is the
 * caller's, and a sender that repeats it is not one we trust.
 */
function readFields(text: string, from: number, maxCount: number, raw: string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  let count = 0;
  forEachField(text, from, malformed, (name, value) => {
    if (++count > maxCount) throw new RequestFramingError('request.headers_too_large', `more than ${maxCount} header fields`);
    raw.push(name, value);
    const lower = name.toLowerCase();
    const existing = out[lower];
    if (existing === undefined) out[lower] = lower === 'set-cookie' ? [value] : value;
    else if (lower === 'content-length') throw malformed('more than one Content-Length');
    else if (Array.isArray(existing)) existing.push(value);
    else out[lower] = `${existing}${lower === 'cookie' ? '; ' : ', '}${value}`;
  });
  return out;
}
