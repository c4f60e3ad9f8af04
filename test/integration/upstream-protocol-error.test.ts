import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { deferAfterEach } from '../helpers/cleanup.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

/*
 * An app (or endpoint) that answers with something that is not HTTP gets a
 * named reason, upstream.protocol_error (502), not "upstream other".
 */

const defer = deferAfterEach();

/** A TCP server that answers every request with `reply` and closes. */
async function brokenApp(reply: string): Promise<string> {
  const server = net.createServer((socket) => {
    socket.once('data', () => socket.end(reply));
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  defer(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function sidecar(config: Parameters<typeof startTestSidecar>[0]): Promise<TestSidecar> {
  const sc = await startTestSidecar({ log: { level: 'info', accessLog: true }, ...config });
  defer(async () => void (await sc.drain(200)));
  return sc;
}

describe('an upstream that does not speak HTTP', () => {
  it.each([
    ['a bad status line', 'HTTP/1.1 2000 OK\r\n\r\n'],
    ['not HTTP at all', 'SSH-2.0-OpenSSH_9.6\r\n\r\n'],
  ])('inbound: an app answering %s gets 502 upstream.protocol_error, in the reply and the access log', async (_what, reply) => {
    const app = await brokenApp(reply);
    const sc = await sidecar({ inbound: { app: `http://${app}` } });
    const res = await request(`${sc.inboundUrl}/x`, { headers: { host: 'test' } });
    expect(res.statusCode).toBe(502);
    expect(res.headers['x-meshgate-reason']).toBe('upstream.protocol_error');
    expect(await res.body.json()).toMatchObject({ code: 'upstream.protocol_error' });
    const line = sc.logs.find((l) => l.direction === 'inbound' && l.path === '/x');
    expect(line).toMatchObject({ status: 502, reason: 'upstream.protocol_error' });
  });

  it('outbound: an endpoint answering a malformed header gets 502 upstream.protocol_error', async () => {
    const endpoint = await brokenApp('HTTP/1.1 200 OK\r\nno colon here\r\n\r\n');
    const sc = await sidecar({ inbound: { app: 'http://127.0.0.1:1' }, services: [{ name: 'orders', endpoints: [{ address: endpoint }] }] });
    const res = await request(`${sc.outboundUrl}/`, { headers: { host: 'orders' } });
    expect(res.statusCode).toBe(502);
    expect(await res.body.json()).toMatchObject({ code: 'upstream.protocol_error' });
    expect(sc.logs.find((l) => l.direction === 'outbound')).toMatchObject({ status: 502, reason: 'upstream.protocol_error' });
  });
});
