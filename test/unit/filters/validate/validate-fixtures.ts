import { Readable } from 'node:stream';
import type { CallContext } from '../../../../src/core/call-context.ts';
import type { PolicyDocument } from '../../../../src/policy/types.ts';
import { createPolicyValidator } from '../../../../src/policy/validate.ts';
import type { DownstreamRequest } from '../../../../src/proxy/listener.ts';
import type { ForwardableBody } from '../../../../src/proxy/request-body.ts';
import { createRequestBody } from '../../../../src/proxy/request-body.ts';

/* ValidationPolicy documents through the real validator, and calls with a real lazily read body. */

const validator = createPolicyValidator();

export function validation(name: string, spec: Record<string, unknown>, namespace = 'shop'): PolicyDocument {
  const result = validator.validate({ apiVersion: 'meshgate.dev/v1', kind: 'ValidationPolicy', metadata: { name, namespace }, spec }, { file: 'test', index: 0 });
  if (!result.ok) throw new Error(`invalid test policy ${name}: ${result.errors.map((e) => `${e.field}: ${e.reason}`).join('; ')}`);
  return result.document.document;
}

export interface CallInput {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  /** The body, sent with a Content-Length unless `chunked`. */
  body?: string | Buffer;
  chunked?: boolean;
  grpc?: boolean;
  /** A generated chunked body of this many bytes, in 16 KiB chunks; `produced()` says how many the filter pulled. */
  generated?: number;
  /** With `generated`: the caller resets the stream after this many bytes. */
  resetAfter?: number;
}

export interface TestCall {
  readonly call: CallContext;
  readonly body: ForwardableBody;
  /** Bytes the body source has handed out so far (pulled by a reader, or buffered in the stream). */
  produced(): number;
  /** What the stack would forward, read to the end. */
  forwarded(): Promise<Buffer | null>;
}

const CHUNK = 16 * 1024;

export function testCall(over: CallInput = {}): TestCall {
  const headers: Record<string, string> = { ...over.headers };
  let produced = 0;
  let source: Readable;
  if (over.generated !== undefined) {
    const total = over.generated;
    headers['transfer-encoding'] = 'chunked';
    source = new Readable({
      highWaterMark: CHUNK,
      read() {
        if (over.resetAfter !== undefined && produced >= over.resetAfter) return void this.destroy(new Error('aborted'));
        if (produced >= total) return void this.push(null);
        const size = Math.min(CHUNK, total - produced);
        produced += size;
        this.push(Buffer.alloc(size, 0x61));
      },
    });
  } else if (over.body !== undefined) {
    const bytes = Buffer.from(over.body);
    if (over.chunked) headers['transfer-encoding'] = 'chunked';
    else headers['content-length'] = String(bytes.length);
    // Two chunks, so a reader must join them.
    const parts = [bytes.subarray(0, Math.floor(bytes.length / 2)), bytes.subarray(Math.floor(bytes.length / 2))];
    source = new Readable({
      read() {
        const next = parts.shift();
        if (next) produced += next.length;
        this.push(next ?? null);
      },
    });
  } else {
    source = Readable.from([]);
  }
  if (over.grpc) headers['content-type'] ??= 'application/grpc';
  const req = Object.assign(source, { headers, httpVersion: over.grpc ? '2.0' : '1.1', stream: { endAfterHeaders: over.body === undefined && over.generated === undefined } });
  const body = createRequestBody(req as unknown as DownstreamRequest);
  const call: CallContext = {
    id: 'r1',
    direction: 'inbound',
    startedAt: 0,
    method: over.method ?? 'POST',
    path: over.path ?? '/orders',
    query: '',
    authority: 'orders',
    headers,
    httpVersion: over.grpc ? '2' : '1.1',
    isGrpc: over.grpc ?? false,
    source: { address: '10.0.0.5', port: 1234, principal: undefined },
    destination: { service: 'orders', namespace: 'shop' },
    annotations: { retries: 0 },
    body,
  };
  return {
    call,
    body,
    produced: () => produced,
    async forwarded() {
      const stream = body.forwardable();
      if (stream === null) return null;
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    },
  };
}

/** Counters that remember every increment, as the sidecar's metrics would count them. */
export function recordingMetrics() {
  const decisions: string[] = [];
  const shadow: string[] = [];
  return {
    decisions,
    shadow,
    metrics: {
      validationDecisions: { inc: (l: { policy: string; rule: string; decision: string }) => void decisions.push(`${l.policy}#${l.rule} ${l.decision}`) },
      shadowDenials: { inc: (l: { policy: string; rule: string }) => void shadow.push(`${l.policy}#${l.rule}`) },
    },
  };
}
