import { EventEmitter, once } from 'node:events';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

/*
 * Real gRPC (grpc-js on both ends) through outbound -> inbound -> app. gRPC
 * puts grpc-status, grpc-message and trailing metadata in HTTP/2 trailers, so
 * every status assertion here also proves trailers survive both hops.
 */

interface EchoRequest {
  message: string;
  delay_ms?: number;
}
interface StreamRequest {
  message: string;
  count: number;
}
interface EchoReply {
  message: string;
  seq: number;
}
interface EchoClient extends grpc.Client {
  Unary(req: EchoRequest, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: EchoReply) => void): grpc.ClientUnaryCall;
  ServerStream(req: StreamRequest, md?: grpc.Metadata): grpc.ClientReadableStream<EchoReply>;
}

const definition = protoLoader.loadSync(fileURLToPath(new URL('../fixtures/echo.proto', import.meta.url)), { defaults: true, keepCase: true });
const EchoService = (grpc.loadPackageDefinition(definition) as unknown as { meshgate: { test: { Echo: grpc.ServiceClientConstructor } } }).meshgate.test.Echo;

/** Server-side events of delayed calls: 'started', then 'cancelled' if the caller or its deadline ends it. */
const serverEvents = new EventEmitter();

const handlers: grpc.UntypedServiceImplementation = {
  Unary(call: grpc.ServerUnaryCall<EchoRequest, EchoReply>, callback: grpc.sendUnaryData<EchoReply>) {
    const { message, delay_ms: delayMs } = call.request;
    if (message === 'missing') {
      const metadata = new grpc.Metadata();
      metadata.set('x-order-id', '42');
      metadata.set('x-detail-bin', Buffer.from([0, 1, 2, 255]));
      callback({ code: grpc.status.NOT_FOUND, details: 'order 42 not found', metadata });
      return;
    }
    const tenant = call.metadata.get('x-tenant')[0] ?? 'none';
    const trailer = new grpc.Metadata();
    trailer.set('x-served-by', 'orders');
    const reply = (): void => callback(null, { message: `${tenant}:${message}`, seq: 0 }, trailer);
    if (!delayMs) return reply();
    const timer = setTimeout(reply, delayMs);
    serverEvents.emit('started', message);
    call.on('cancelled', () => {
      clearTimeout(timer);
      serverEvents.emit('cancelled', message);
    });
  },
  ServerStream(call: grpc.ServerWritableStream<StreamRequest, EchoReply>) {
    for (let seq = 0; seq < call.request.count; seq++) call.write({ message: `${call.request.message}-${seq}`, seq });
    call.end();
  },
};

interface UnaryResult {
  err: grpc.ServiceError | null;
  reply?: EchoReply;
  trailers?: grpc.Metadata;
}

/** One unary call: its handle, and the outcome once both the callback and the final status arrived. */
function unary(client: EchoClient, req: EchoRequest, opts: grpc.CallOptions = {}, md = new grpc.Metadata()) {
  let call!: grpc.ClientUnaryCall;
  const done = new Promise<UnaryResult>((resolve) => {
    let trailers: grpc.Metadata | undefined;
    let result: UnaryResult | undefined;
    const finish = (): void => {
      if (result && trailers) resolve({ ...result, trailers });
    };
    call = client.Unary(req, md, opts, (err, reply) => ((result = { err, reply }), finish()));
    call.on('status', (status: grpc.StatusObject) => ((trailers = status.metadata), finish()));
  });
  return { call, done };
}

describe('gRPC through outbound -> inbound -> app', () => {
  let app: grpc.Server;
  let server: TestSidecar;
  let client: TestSidecar;
  let echo: EchoClient;

  beforeAll(async () => {
    app = new grpc.Server();
    app.addService(EchoService.service, handlers);
    const port = await new Promise<number>((resolve, reject) => app.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    server = await startTestSidecar({ workload: { service: 'orders' }, inbound: { app: `http://127.0.0.1:${port}` } });
    client = await startTestSidecar({
      workload: { service: 'frontend' },
      inbound: { app: 'http://127.0.0.1:1' },
      services: [{ name: 'orders', endpoints: [{ address: `127.0.0.1:${server.inbound.port}` }] }],
    });
    // The channel dials the outbound listener; the authority names the service the sidecar routes to.
    echo = new EchoService(`127.0.0.1:${client.outbound.port}`, grpc.credentials.createInsecure(), {
      'grpc.default_authority': 'orders',
    }) as unknown as EchoClient;
  });
  afterAll(async () => {
    echo?.close();
    await client?.drain(500);
    await server?.drain(500);
    app?.forceShutdown();
  });

  it('unary: the reply, request metadata and trailing metadata make it through', async () => {
    const md = new grpc.Metadata();
    md.set('x-tenant', 'acme');
    const { err, reply, trailers } = await unary(echo, { message: 'hello' }, {}, md).done;
    expect(err).toBeNull();
    expect(reply).toEqual({ message: 'acme:hello', seq: 0 });
    expect(trailers!.get('x-served-by')).toEqual(['orders']);
  });

  it('server streaming: 200 messages arrive, all of them, in order', async () => {
    const call = echo.ServerStream({ message: 'm', count: 200 });
    const seen: EchoReply[] = [];
    call.on('data', (r: EchoReply) => seen.push(r));
    const [status] = (await once(call, 'status')) as [grpc.StatusObject];
    expect(status.code).toBe(grpc.status.OK);
    expect(seen.map((r) => r.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(seen[199]!.message).toBe('m-199');
  });

  it('an error status, its message and its trailing metadata (text and binary) reach the client intact', async () => {
    const { err } = await unary(echo, { message: 'missing' }).done;
    expect(err?.code).toBe(grpc.status.NOT_FOUND);
    expect(err?.details).toBe('order 42 not found');
    expect(err?.metadata.get('x-order-id')).toEqual(['42']);
    expect(err?.metadata.get('x-detail-bin')).toEqual([Buffer.from([0, 1, 2, 255])]);
  });

  it('a deadline shorter than the handler gives DEADLINE_EXCEEDED, and the app sees the call end', async () => {
    const cancelled = once(serverEvents, 'cancelled', { signal: AbortSignal.timeout(5_000) });
    const started = Date.now();
    const { err } = await unary(echo, { message: 'slow', delay_ms: 10_000 }, { deadline: Date.now() + 300 }).done;
    expect(err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(await cancelled).toEqual(['slow']);
  });

  it('a caller that cancels frees the app: the cancellation crosses both sidecars', async () => {
    const signal = AbortSignal.timeout(5_000);
    const started = once(serverEvents, 'started', { signal });
    const cancelled = once(serverEvents, 'cancelled', { signal });
    // No deadline here, so only the stream reset relayed by both sidecars can end the server's call.
    const { call, done } = unary(echo, { message: 'abandoned', delay_ms: 10_000 });
    expect(await started).toEqual(['abandoned']);
    call.cancel();
    expect((await done).err?.code).toBe(grpc.status.CANCELLED);
    expect(await cancelled).toEqual(['abandoned']);
  });
});
