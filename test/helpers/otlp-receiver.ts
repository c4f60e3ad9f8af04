import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/*
 * A real OTLP trace receiver for tests: OTLP/HTTP (protobuf, POST /v1/traces)
 * and OTLP/gRPC (TraceService/Export) on 127.0.0.1, port 0, decoding what the
 * exporters send with the upstream field numbers (test/fixtures/otlp-trace.proto).
 */

export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** '' for a root span. */
  readonly parentSpanId: string;
  readonly name: string;
  /** 1 internal, 2 server, 3 client. */
  readonly kind: number;
  readonly attributes: Readonly<Record<string, unknown>>;
  /** 0 unset, 1 ok, 2 error. */
  readonly status: { readonly code: number; readonly message: string };
  readonly events: ReadonlyArray<{ readonly name: string; readonly attributes: Readonly<Record<string, unknown>> }>;
  readonly resource: Readonly<Record<string, unknown>>;
  readonly traceState: string;
}

export interface OtlpReceiver {
  /** Base URL of the HTTP receiver (the exporter adds /v1/traces). */
  readonly httpUrl: string;
  /** http://127.0.0.1:PORT of the gRPC receiver. */
  readonly grpcUrl: string;
  spans(): ReceivedSpan[];
  /** Every export request body as received (after gunzip), for "never contains" checks. */
  rawBodies(): Buffer[];
  /** Export requests seen, by transport. */
  requests(): { readonly http: number; readonly grpc: number };
  /** Resolves with the spans once `predicate` holds for them, or rejects after `timeoutMs`. */
  waitFor(predicate: (spans: ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<ReceivedSpan[]>;
  /** Makes the HTTP receiver answer 503 (a collector that is down) until called with false. */
  failHttp(failing: boolean): void;
  close(): Promise<void>;
}

const PROTO = new URL('../fixtures/otlp-trace.proto', import.meta.url).pathname;
const SERVICE = 'opentelemetry.proto.collector.trace.v1.TraceService';

interface WireValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string;
  doubleValue?: number;
  arrayValue?: { values?: WireValue[] };
  bytesValue?: Buffer;
  value?: string;
}
interface WireKeyValue {
  key: string;
  value?: WireValue;
}
interface WireSpan {
  traceId: Buffer;
  spanId: Buffer;
  parentSpanId: Buffer;
  traceState: string;
  name: string;
  kind: string | number;
  attributes?: WireKeyValue[];
  events?: Array<{ name: string; attributes?: WireKeyValue[] }>;
  status?: { code?: string | number; message?: string };
}
interface WireRequest {
  resourceSpans?: Array<{ resource?: { attributes?: WireKeyValue[] }; scopeSpans?: Array<{ spans?: WireSpan[] }> }>;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const definition = protoLoader.loadSync(PROTO, { longs: String, enums: Number, defaults: true, oneofs: true });
  const service = definition[SERVICE] as grpc.ServiceDefinition;
  const exportMethod = service.Export!;
  const spans: ReceivedSpan[] = [];
  const bodies: Buffer[] = [];
  const counts = { http: 0, grpc: 0 };
  let httpFailing = false;
  const waiters = new Set<() => void>();
  const accept = (request: WireRequest): void => {
    spans.push(...flatten(request));
    for (const wake of waiters) wake();
  };

  const httpServer = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      if (httpFailing) {
        res.writeHead(503, { 'content-type': 'text/plain' }).end('collector down');
        return;
      }
      try {
        let body = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
        bodies.push(body);
        counts.http++;
        const request = req.headers['content-type'] === 'application/json' ? (JSON.parse(body.toString('utf8')) as WireRequest) : (exportMethod.requestDeserialize(body) as WireRequest);
        accept(request);
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end(exportMethod.responseSerialize({}));
      } catch (err) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end(String(err));
      }
    });
  });
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const httpPort = (httpServer.address() as AddressInfo).port;

  const grpcServer = new grpc.Server();
  grpcServer.addService(service, {
    Export(call: grpc.ServerUnaryCall<WireRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      counts.grpc++;
      bodies.push(Buffer.from(exportMethod.requestSerialize(call.request)));
      accept(call.request);
      callback(null, {});
    },
  });
  const grpcPort = await new Promise<number>((resolve, reject) => grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));

  return {
    httpUrl: `http://127.0.0.1:${httpPort}`,
    grpcUrl: `http://127.0.0.1:${grpcPort}`,
    spans: () => [...spans],
    rawBodies: () => [...bodies],
    requests: () => ({ ...counts }),
    failHttp(failing) {
      httpFailing = failing;
    },
    waitFor(predicate, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (!predicate([...spans])) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve([...spans]);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`OTLP receiver: condition not met within ${timeoutMs} ms; got ${spans.length} spans: ${spans.map((s) => s.name).join(', ')}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async close() {
      httpServer.closeAllConnections();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
      await new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
    },
  };
}

function flatten(request: WireRequest): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of request.resourceSpans ?? []) {
    const resource = attributesOf(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const span of ss.spans ?? []) {
        out.push({
          traceId: hex(span.traceId),
          spanId: hex(span.spanId),
          parentSpanId: hex(span.parentSpanId),
          name: span.name,
          kind: Number(span.kind),
          attributes: attributesOf(span.attributes),
          status: { code: Number(span.status?.code ?? 0), message: span.status?.message ?? '' },
          events: (span.events ?? []).map((e) => ({ name: e.name, attributes: attributesOf(e.attributes) })),
          resource,
          traceState: span.traceState ?? '',
        });
      }
    }
  }
  return out;
}

/** OTLP/JSON carries ids as hex strings, protobuf as bytes. */
function hex(id: Buffer | string | undefined): string {
  if (id === undefined) return '';
  return typeof id === 'string' ? id : Buffer.from(id).toString('hex');
}

function attributesOf(list: WireKeyValue[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const kv of list ?? []) out[kv.key] = wireValueOf(kv.value);
  return out;
}

function wireValueOf(value: WireValue | undefined): unknown {
  if (!value) return undefined;
  if (value.stringValue !== undefined && (value.value === undefined || value.value === 'stringValue')) return value.stringValue;
  switch (value.value) {
    case 'boolValue':
      return value.boolValue;
    case 'intValue':
      return Number(value.intValue);
    case 'doubleValue':
      return value.doubleValue;
    case 'arrayValue':
      return (value.arrayValue?.values ?? []).map(wireValueOf);
    case 'bytesValue':
      return value.bytesValue;
    default:
      return value.stringValue;
  }
}
