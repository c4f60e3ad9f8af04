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

import type { BodyFraming, FramingFault } from './h1-message-parser.ts';
import { declaredFraming, FRAMING, forEachField, H1MessageParser, isFieldText, keepsConnection } from './h1-message-parser.ts';

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
const fault = (reason: string): UpstreamProtocolError => new UpstreamProtocolError(reason);

export class ResponseParser extends H1MessageParser {
  #noBody = false;
  #reusable = false;
  readonly #sink: ResponseSink;

  constructor(sink: ResponseSink, maxHeadBytes: number) {
    super(maxHeadBytes, 'response');
    this.#sink = sink;
  }

  /** Ready for the response to the next request; `noBody` for a HEAD request (its response has no body whatever it declares). */
  expect(noBody: boolean): void {
    this.restart();
    this.#noBody = noBody;
  }

  protected fault(_kind: FramingFault, reason: string): Error {
    return fault(reason);
  }

  /** Bytes after the end of the response are an error: nothing was asked. */
  protected afterEnd(): Buffer | undefined {
    throw fault('bytes after the end of the response');
  }

  protected readData(chunk: Buffer): void {
    this.#sink.onData(chunk);
  }

  protected readEnd(trailers: string | undefined): void {
    this.#sink.onEnd(trailers === undefined ? NO_TRAILERS : parseFields(trailers, 0), this.#reusable);
  }

  /** Parses one head; an informational (1xx) one is skipped as undici does (another head follows). */
  protected readHead(text: string): BodyFraming {
    const lineEnd = text.indexOf('\r\n');
    const end = lineEnd < 0 ? text.length : lineEnd;
    const code = statusCodeOf(text, end);
    if (code < 0) throw fault('invalid status line');
    const headers = lineEnd < 0 ? {} : parseFields(text, lineEnd + 2);
    if (code < 200) {
      // 101 would switch protocols on a connection meshgate did not ask to upgrade.
      if (code === 101) throw fault('unrequested protocol switch (101)');
      return FRAMING.skip;
    }
    const http10 = text.charCodeAt(7) === 48; // HTTP/1.0
    this.#reusable = keepsConnection(headers.connection, http10);
    const te = headers['transfer-encoding'];
    const cl = headers['content-length'];
    // Checked before a body-less response too: the pair is how a smuggled response starts.
    if (te !== undefined && cl !== undefined) throw fault('both Transfer-Encoding and Content-Length');
    this.#sink.onHead(code, headers, end > 13 ? text.slice(13, end) : '');
    if (this.#noBody || code === 204 || code === 304) return FRAMING.none;
    const framing = declaredFraming(te, cl, http10, fault);
    if (framing !== undefined) return framing;
    this.#reusable = false;
    return FRAMING.untilClose;
  }
}

/**
 * Field lines of `text` from `from` on (./h1-message-parser.ts checks them), into node:http's shape:
 * lower-case names, repeated fields as arrays (set-cookie, too).
 */
function parseFields(text: string, from: number): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  forEachField(text, from, fault, (raw, value) => {
    const name = raw.toLowerCase();
    const existing = out[name];
    if (existing === undefined) out[name] = value;
    else if (name === 'content-length') {
      // Repeated identical values are one length (RFC 9110 §8.6); different ones are refused.
      if (existing !== value) throw fault('conflicting Content-Length values');
    } else if (Array.isArray(existing)) existing.push(value);
    else out[name] = [existing, value];
  });
  return out;
}

/**
 * The code of the status line `text[0, end)`, or -1 if it is not one (RFC 9112 §4): `HTTP/1.0` or
 * `HTTP/1.1`, a space, three digits from 100, then nothing, or a space and a reason phrase of HTAB,
 * SP, visible and obs-text characters. By character code rather than a regular expression and its
 * match array: a response head is read on every call.
 */
export function statusCodeOf(text: string, end: number): number {
  if (end < 12 || !text.startsWith('HTTP/1.')) return -1;
  const minor = text.charCodeAt(7);
  if ((minor !== 48 && minor !== 49) || text.charCodeAt(8) !== 32) return -1;
  const hundreds = text.charCodeAt(9) - 48;
  const tens = text.charCodeAt(10) - 48;
  const units = text.charCodeAt(11) - 48;
  if (hundreds < 1 || hundreds > 9 || tens < 0 || tens > 9 || units < 0 || units > 9) return -1;
  if (end > 12 && (text.charCodeAt(12) !== 32 || !isFieldText(text, 13, end))) return -1;
  return hundreds * 100 + tens * 10 + units;
}
