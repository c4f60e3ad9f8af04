import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sidecarConfigSchema } from '../../src/config/sidecar-schema.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { OriginalDestination } from '../../src/interception/original-dst.ts';
import { createOutboundDivert } from '../../src/interception/outbound-divert.ts';
import { createInterceptionReporter } from '../../src/interception/reporter.ts';
import type { HttpListener } from '../../src/proxy/listener.ts';
import { createHttpListener } from '../../src/proxy/listener.ts';
import { createReadBuffer } from '../../src/proxy/socket-reads.ts';
import { createLogger } from '../../src/telemetry/logger.ts';
import { createSidecarMetrics } from '../../src/telemetry/metrics.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';

/*
 * The outbound listener's decisions on captured connections, on loopback:
 * real listener, real sockets, real upstream servers. Only "where was this
 * connection going" is given by the test instead of the kernel (the
 * network-namespace e2e reads it from real REDIRECT rules), so this runs
 * without root.
 */

describe('outbound interception on a listener', () => {
  let echo: net.Server;
  let greeter: net.Server;
  let listener: HttpListener;
  let port: number;
  let dst: OriginalDestination | undefined;
  let policy: 'ALLOW_ANY' | 'REGISTRY_ONLY';
  const metrics = createSidecarMetrics({ defaultMetrics: false });
  const count = async (name: string, labels: Record<string, string>) => sumOf(parsePrometheusText(await metrics.registry.metrics()), name, labels);
  const serverPort = (s: net.Server) => (s.address() as AddressInfo).port;

  /** Connects to the listener, sends `send` (if any) and collects until `until` arrives or the connection ends. */
  const exchange = (send: string | undefined, until?: string) =>
    new Promise<{ received: string; ended: 'closed' | 'reset' | 'until' }>((resolve) => {
      let received = '';
      const socket = net.connect(port, '127.0.0.1', () => {
        if (send !== undefined) socket.write(send);
      });
      socket.setEncoding('utf8').on('data', (chunk: string) => {
        received += chunk;
        if (until !== undefined && received.includes(until)) {
          socket.destroy();
          resolve({ received, ended: 'until' });
        }
      });
      socket.on('error', () => resolve({ received, ended: 'reset' }));
      socket.on('close', () => resolve({ received, ended: 'closed' }));
    });

  beforeAll(async () => {
    echo = net.createServer((s) => s.on('data', (d) => s.write(`echo:${d}`)).on('error', () => {}));
    greeter = net.createServer((s) => s.end('greeting\n'));
    await Promise.all([echo, greeter].map((s) => new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))));
    const limits = sidecarConfigSchema.parse({ workload: { service: 'frontend' }, inbound: { app: 'http://127.0.0.1:1' }, mtls: { mode: 'DISABLE' } }).limits;
    const divert = createOutboundDivert({
      reader: { read: () => dst },
      get policy() {
        return policy;
      },
      detectionTimeoutMs: 100,
      connectTimeoutMs: 1_000,
      ownPorts: () => [port],
      report: createInterceptionReporter({ metrics, clock: systemClock, logger: createLogger({ level: 'silent', name: 'test' }) }),
    });
    listener = createHttpListener('outbound', limits, (_req, res) => res.end('served over HTTP'), { divert: divert.divert, readBuffer: createReadBuffer() });
    port = (await listener.listen(0, '127.0.0.1')).port;
  });
  afterAll(async () => {
    listener.destroy();
    await listener.stopAccepting();
    echo.close();
    greeter.close();
  });
  beforeEach(() => {
    policy = 'ALLOW_ANY';
  });

  it('serves a connection nobody redirected as it always did (an app using the sidecar as its HTTP proxy)', async () => {
    dst = undefined;
    const res = await exchange('GET /x HTTP/1.1\r\nhost: orders.shop\r\n\r\n', 'served over HTTP');
    expect(res.received).toContain('200 OK');
  });

  it('hands a captured connection that speaks HTTP to the HTTP servers, not to the original destination', async () => {
    dst = { address: '127.0.0.1', port: serverPort(echo) };
    // Bytes that could still become a method wait for more; when none come in time, they are relayed raw.
    expect((await exchange('GE', 'echo:GE')).received).toBe('echo:GE');
    const http = await exchange('GET /x HTTP/1.1\r\nhost: orders.shop\r\n\r\n', 'served over HTTP');
    expect(http.received).not.toContain('echo:');
  });

  it('relays another protocol byte for byte to the original destination and counts it', async () => {
    dst = { address: '127.0.0.1', port: serverPort(echo) };
    const before = await count('meshgate_outbound_passthrough_total', { reason: 'not_http' });
    expect(await exchange('\x16\x03\x01 not http', 'not http')).toMatchObject({ received: 'echo:\x16\x03\x01 not http' });
    expect((await count('meshgate_outbound_passthrough_total', { reason: 'not_http' })) - before).toBe(1);
  });

  it('relays a silent client after the detection timeout, for a protocol where the server speaks first', async () => {
    dst = { address: '127.0.0.1', port: serverPort(greeter) };
    const before = await count('meshgate_outbound_passthrough_total', { reason: 'server_first' });
    expect(await exchange(undefined, '\n')).toMatchObject({ received: 'greeting\n' });
    expect((await count('meshgate_outbound_passthrough_total', { reason: 'server_first' })) - before).toBe(1);
  });

  it('closes other protocols under REGISTRY_ONLY, counted', async () => {
    policy = 'REGISTRY_ONLY';
    dst = { address: '127.0.0.1', port: serverPort(echo) };
    const before = await count('meshgate_interception_refusals_total', { direction: 'outbound', reason: 'registry_only' });
    expect((await exchange('ping')).received).toBe('');
    expect((await count('meshgate_interception_refusals_total', { direction: 'outbound', reason: 'registry_only' })) - before).toBe(1);
  });

  it('never dials its own listener: a captured connection headed there is a loop, closed and counted', async () => {
    dst = { address: '127.0.0.1', port };
    const before = await count('meshgate_interception_refusals_total', { direction: 'outbound', reason: 'loop' });
    expect((await exchange('ping')).received).toBe('');
    expect((await count('meshgate_interception_refusals_total', { direction: 'outbound', reason: 'loop' })) - before).toBe(1);
  });

  it('resets the app connection when the original destination does not answer, counted', async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    dst = { address: '127.0.0.1', port: serverPort(closed) };
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const before = await count('meshgate_interception_refusals_total', { direction: 'outbound', reason: 'connect_failed' });
    expect(await exchange('ping')).toMatchObject({ received: '', ended: 'reset' });
    expect((await count('meshgate_interception_refusals_total', { direction: 'outbound', reason: 'connect_failed' })) - before).toBe(1);
  });
});
