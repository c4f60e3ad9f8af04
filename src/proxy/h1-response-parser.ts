/*
 * An HTTP/1.1 response parser for the sidecar's upstream connections
 * (src/proxy/h1-pool.ts), fed the bytes of one connection as they arrive.
 *
 * Why by hand: undici's client costs a plaintext hop about a fifth of its CPU
 * (bench/README.md, "Cost per pod"), and Node exposes no HTTP/1.1 parser of
 * its own to user code (llhttp is internal to node:http and to undici). This
 * one only reads responses to requests the sidecar sent, one at a time (no
 * pipelining), and is strict where a lenient parser lets two parties disagree
 * on where a response ends (RFC 9112 §6.3, §11.2): CRLF line ends only, no
 * obs-fold, no Content-Length with Transfer-Encoding, one Content-Length
 * value, `chunked` as the only transfer coding, bounded head and chunk lines.
 * A refused response ends the connection; it is never reused.
 */

export interface ResponseSink {
  onHead(status: number, headers: Record<string, string | string[]>, statusText: string): void;
  onData(chunk: Buffer): void;
  /** The response is whole; `reusable`: the connection may carry another request. */
  onEnd(trailers: Record<string, string | string[]>, reusable: boolean): void;
}

/** The upstream's bytes are not an HTTP/1.1 response meshgate accepts (502 upstream.protocol_error). */
export class UpstreamProtocolError extends Error {
  override readonly name = 'UpstreamProtocolError';
  readonly code = 'MESHGATE_UPSTREAM_PROTOCOL';
}

/** The trailers of a response that has none: one shared object, nothing allocated per call (sinks only read it). */
const NO_TRAILERS: Readonly<Record<string, string | string[]>> = Object.freeze({});
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,12})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?$/;
const CONTENT_LENGTH = /^\d{1,15}$/;
/** A chunk-size line with its extensions; llhttp and Node allow no more in practice. */
const MAX_CHUNK_LINE = 4096;

type State = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailers' | 'until-close' | 'done';

export class ResponseParser {
  #state: State = 'head';
  #buffer: Buffer | undefined;
  #remaining = 0;
  #noBody = false;
  #reusable = false;
  readonly #sink: ResponseSink;
  readonly #maxHeadBytes: number;

  constructor(sink: ResponseSink, maxHeadBytes: number) {
    this.#sink = sink;
    this.#maxHeadBytes = maxHeadBytes;
  }

  /** Ready for the response to the next request; `noBody` for a HEAD request (its response has no body whatever it declares). */
  expect(noBody: boolean): void {
    this.#state = 'head';
    this.#buffer = undefined;
    this.#noBody = noBody;
  }

  get done(): boolean {
    return this.#state === 'done';
  }

  /** Whether the bytes so far leave the response unfinished only because more may come (a close now ends an until-close body). */
  get readsUntilClose(): boolean {
    return this.#state === 'until-close';
  }

  /** Feeds bytes; throws UpstreamProtocolError. Bytes after the end of the response are an error (nothing was asked). */
  execute(input: Buffer): void {
    const chunk = this.#buffer === undefined ? input : Buffer.concat([this.#buffer, input]);
    this.#buffer = undefined;
    let at = 0;
    while (at < chunk.length) {
      switch (this.#state) {
        case 'head': {
          const end = this.#find(chunk, at, '\r\n\r\n', this.#maxHeadBytes, 'response head');
          if (end < 0) return;
          this.#head(chunk.toString('latin1', at, end));
          at = end + 4;
          break;
        }
        case 'length':
          at = this.#take(chunk, at);
          if (this.#remaining === 0) this.#end(NO_TRAILERS);
          break;
        case 'until-close':
          this.#sink.onData(at === 0 ? chunk : chunk.subarray(at));
          return;
        case 'chunk-size': {
          const end = this.#find(chunk, at, '\r\n', MAX_CHUNK_LINE, 'chunk-size line');
          if (end < 0) return;
          const match = CHUNK_SIZE.exec(chunk.toString('latin1', at, end));
          if (!match) throw new UpstreamProtocolError('invalid chunk size line');
          this.#remaining = Number.parseInt(match[1]!, 16);
          at = end + 2;
          this.#state = this.#remaining === 0 ? 'trailers' : 'chunk-data';
          break;
        }
        case 'chunk-data':
          at = this.#take(chunk, at);
          if (this.#remaining === 0) this.#state = 'chunk-end';
          break;
        case 'chunk-end': {
          if (chunk.length - at < 2) {
            this.#keep(chunk, at, 2, 'chunk end');
            return;
          }
          if (chunk[at] !== 13 || chunk[at + 1] !== 10) throw new UpstreamProtocolError('chunk data not followed by CRLF');
          at += 2;
          this.#state = 'chunk-size';
          break;
        }
        case 'trailers': {
          // Either CRLF at once (no trailers) or field lines ending with an empty line.
          if (chunk.length - at >= 2 && chunk[at] === 13 && chunk[at + 1] === 10) {
            at += 2;
            this.#end(NO_TRAILERS);
            break;
          }
          const end = this.#find(chunk, at, '\r\n\r\n', this.#maxHeadBytes, 'trailer section');
          if (end < 0) return;
          const trailers = parseFields(chunk.toString('latin1', at, end), 0);
          at = end + 4;
          this.#end(trailers);
          break;
        }
        case 'done':
          throw new UpstreamProtocolError('bytes after the end of the response');
      }
    }
  }

  /** Hands on up to #remaining body bytes from `at`; returns where the next unread byte is. */
  #take(chunk: Buffer, at: number): number {
    const take = Math.min(this.#remaining, chunk.length - at);
    this.#remaining -= take;
    this.#sink.onData(chunk.subarray(at, at + take));
    return at + take;
  }

  /**
   * Where `terminator` ends the line or section that starts at `at`, or -1 when it has not arrived yet
   * (the rest is held). Bounded whether it comes in pieces or in one read: an upstream cannot grow it
   * without end.
   */
  #find(chunk: Buffer, at: number, terminator: string, limit: number, what: string): number {
    const end = chunk.indexOf(terminator, at, 'latin1');
    if (end < 0) {
      this.#keep(chunk, at, limit, what);
      return -1;
    }
    if (end - at > limit) throw new UpstreamProtocolError(`${what} larger than ${limit} bytes`);
    return end;
  }

  /** Holds an unfinished line or head, bounded: an upstream cannot grow it without end. */
  #keep(chunk: Buffer, at: number, limit: number, what: string): void {
    const rest = chunk.length - at;
    if (rest > limit) throw new UpstreamProtocolError(`${what} longer than ${limit} bytes`);
    if (rest > 0) this.#buffer = at === 0 ? chunk : chunk.subarray(at);
  }

  /** Parses one head; an informational (1xx) one is skipped as undici does (the state stays 'head'). */
  #head(text: string): void {
    const lineEnd = text.indexOf('\r\n');
    const status = STATUS_LINE.exec(lineEnd < 0 ? text : text.slice(0, lineEnd));
    if (!status) throw new UpstreamProtocolError('invalid status line');
    const code = Number(status[2]);
    const headers = lineEnd < 0 ? {} : parseFields(text, lineEnd + 2);
    if (code < 200) {
      // 101 would switch protocols on a connection meshgate did not ask to upgrade.
      if (code === 101) throw new UpstreamProtocolError('unrequested protocol switch (101)');
      return;
    }
    const http10 = status[1] === '0';
    const connection = headers.connection;
    const tokens = typeof connection === 'string' ? connection.toLowerCase() : Array.isArray(connection) ? connection.join(',').toLowerCase() : '';
    this.#reusable = http10 ? /(^|,)\s*keep-alive\s*(,|$)/.test(tokens) : !/(^|,)\s*close\s*(,|$)/.test(tokens);
    const te = headers['transfer-encoding'];
    const cl = headers['content-length'];
    if (te !== undefined && cl !== undefined) throw new UpstreamProtocolError('both Transfer-Encoding and Content-Length');
    this.#sink.onHead(code, headers, status[3] ?? '');
    if (this.#noBody || code === 204 || code === 304) {
      this.#end(NO_TRAILERS);
    } else if (te !== undefined) {
      if (typeof te !== 'string' || te.toLowerCase() !== 'chunked' || http10) throw new UpstreamProtocolError('unsupported Transfer-Encoding');
      this.#state = 'chunk-size';
    } else if (cl !== undefined) {
      if (typeof cl !== 'string' || !CONTENT_LENGTH.test(cl)) throw new UpstreamProtocolError('invalid Content-Length');
      this.#remaining = Number(cl);
      if (this.#remaining === 0) this.#end(NO_TRAILERS);
      else this.#state = 'length';
    } else {
      this.#reusable = false;
      this.#state = 'until-close';
    }
  }

  #end(trailers: Record<string, string | string[]>): void {
    this.#state = 'done';
    this.#sink.onEnd(trailers, this.#reusable);
  }

  /** The connection closed: ends an until-close body; any other unfinished response is an error. */
  close(): void {
    if (this.#state === 'until-close') this.#end(NO_TRAILERS);
  }
}

/** RFC 9110 tchar, by character code: what a field name is made of. */
export const TOKEN_CHARS = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TOKEN_CHARS[c.charCodeAt(0)] = 1;

/**
 * Field lines of `text` (latin1, CRLF between lines, none at the end) from `from` on, into node:http's
 * shape: lower-case names, repeated fields as arrays (set-cookie, too). Scanned by character code, not
 * with a regular expression per line: a response head is parsed on every call.
 */
function parseFields(text: string, from: number): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  let at = from;
  while (at < text.length) {
    let eol = text.indexOf('\r\n', at);
    if (eol < 0) eol = text.length;
    const colon = text.indexOf(':', at);
    // Also refuses obs-fold (a line that starts with whitespace) and whitespace before the colon.
    if (colon <= at || colon > eol) throw new UpstreamProtocolError('invalid header line');
    for (let i = at; i < colon; i++) {
      const c = text.charCodeAt(i);
      if (c > 127 || TOKEN_CHARS[c] === 0) throw new UpstreamProtocolError('invalid header line');
    }
    let start = colon + 1;
    let end = eol;
    while (start < end && (text.charCodeAt(start) === 32 || text.charCodeAt(start) === 9)) start++;
    while (end > start && (text.charCodeAt(end - 1) === 32 || text.charCodeAt(end - 1) === 9)) end--;
    for (let i = start; i < end; i++) {
      const c = text.charCodeAt(i);
      // CTLs but HTAB (a bare CR or LF among them) and DEL; obs-text (0x80-0xFF) is allowed.
      if ((c < 32 && c !== 9) || c === 127) throw new UpstreamProtocolError('invalid character in a header value');
    }
    const name = text.slice(at, colon).toLowerCase();
    const value = text.slice(start, end);
    const existing = out[name];
    if (existing === undefined) out[name] = value;
    else if (name === 'content-length') {
      // Repeated identical values are one length (RFC 9110 §8.6); different ones are refused.
      if (existing !== value) throw new UpstreamProtocolError('conflicting Content-Length values');
    } else if (Array.isArray(existing)) existing.push(value);
    else out[name] = [existing, value];
    at = eol + 2;
  }
  return out;
}
