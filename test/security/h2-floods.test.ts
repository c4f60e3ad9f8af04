import http2 from 'node:http2';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { FrameType, frame, goawayCode, headerBlock, settingsPayload, u32 } from '../helpers/h2-frames.ts';
import { connectH2, requestFields, requestFrame } from '../helpers/h2-raw.ts';
import type { TestServer } from '../helpers/servers.ts';
import { echoHandler, startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { watchRefusal } from './catalogue.ts';

/*
 * Issue #10, HTTP/2 class: floods and flow-control abuse on the plaintext
 * (h2c) listeners. Each ends in GOAWAY with its error code and a closed
 * connection, counted once in meshgate_connections_closed_total with one log
 * line, the upstream untouched, /ready still answering. Each case has its own
 * sidecar: abuse lines are gated to one a minute per listener and reason.
 */

const { NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_FLOW_CONTROL_ERROR, NGHTTP2_PROTOCOL_ERROR } = http2.constants;
const AUTHORITY = 'orders';
const MiB = 1024 * 1024;

type Direction = 'inbound' | 'outbound';

describe('HTTP/2 floods and window abuse', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function sidecarWith(handler = echoHandler('app'), limits: Record<string, unknown> = {}): Promise<{ sc: TestSidecar; app: TestServer }> {
    const app = await startHttpServer(handler);
    cleanups.push(() => app.close());
    const sc = await startTestSidecar({
      inbound: { app: app.url },
      services: [{ name: AUTHORITY, protocol: 'http1', endpoints: [{ address: app.address }] }],
      limits,
    });
    cleanups.push(async () => void (await sc.drain(100)));
    return { sc, app };
  }
  const portOf = (sc: TestSidecar, direction: Direction): number => (direction === 'inbound' ? sc.inbound.port : sc.outbound.port);

  async function expectReady(sc: TestSidecar): Promise<void> {
    const startedAt = performance.now();
    const ready = await request(`${sc.adminUrl}/ready`);
    await ready.body.dump();
    expect(ready.statusCode).toBe(200);
    expect(performance.now() - startedAt).toBeLessThan(1000);
  }

  /** Sends `attack` with reads paused (the ACKs pile up unread), then reads what came back. */
  async function floodWithoutReading(port: number, attack: Buffer) {
    const conn = await connectH2(port);
    conn.socket.pause();
    await new Promise<void>((resolve) => conn.socket.write(attack, () => resolve()));
    conn.socket.resume();
    const { afterMs } = await conn.closed;
    return { conn, afterMs };
  }

  it.each(['inbound', 'outbound'] as const)('%s: CONTINUATION flood (CVE-2024-27316): GOAWAY ENHANCE_YOUR_CALM within a second, memory bounded, counted http2_flood', async (direction) => {
    const { sc, app } = await sidecarWith();
    const watch = await watchRefusal(sc, [app]);
    const rssBefore = process.memoryUsage().rss;
    const conn = await connectH2(portOf(sc, direction));
    // HEADERS without END_HEADERS, then CONTINUATION frames for as long as the connection takes them.
    conn.write(frame(FrameType.HEADERS, 0, 1, headerBlock(requestFields(AUTHORITY))));
    const burst = Buffer.concat(Array.from({ length: 100 }, (_, i) => frame(FrameType.CONTINUATION, 0, 1, headerBlock([[`x-flood-${i}`, 'v'.repeat(100)]]))));
    let sent = 0;
    const startedAt = performance.now();
    while (!conn.socket.destroyed && performance.now() - startedAt < 5000) {
      conn.write(burst);
      sent += burst.length;
      await new Promise((resolve) => setImmediate(resolve));
    }
    const { afterMs } = await conn.closed;
    expect(afterMs).toBeLessThan(1000);
    expect(goawayCode(conn.frames())).toBe(NGHTTP2_ENHANCE_YOUR_CALM);
    expect(sent).toBeLessThan(16 * MiB);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(64 * MiB);
    await watch.refused({ reason: 'http2_flood', counter: { name: 'meshgate_connections_closed_total', labels: { listener: direction, reason: 'http2_flood' } }, message: /abused the protocol/ });
    await expectReady(sc);
  });

  it.each([
    ['inbound', 'SETTINGS', frame(FrameType.SETTINGS, 0, 0, settingsPayload([[0x3, 100]]))],
    ['outbound', 'SETTINGS', frame(FrameType.SETTINGS, 0, 0, settingsPayload([[0x3, 100]]))],
    ['inbound', 'PING', frame(FrameType.PING, 0, 0, Buffer.alloc(8, 7))],
    ['outbound', 'PING', frame(FrameType.PING, 0, 0, Buffer.alloc(8, 7))],
  ] as const)('%s: %s flood (20 000 frames, ACKs unread): GOAWAY ENHANCE_YOUR_CALM, counted http2_flood, /ready answers', async (direction, _kind, one) => {
    const { sc, app } = await sidecarWith();
    const watch = await watchRefusal(sc, [app]);
    const { conn, afterMs } = await floodWithoutReading(portOf(sc, direction), Buffer.concat(Array.from({ length: 20_000 }, () => one)));
    expect(goawayCode(conn.frames())).toBe(NGHTTP2_ENHANCE_YOUR_CALM);
    expect(afterMs).toBeLessThan(5000);
    await watch.refused({ reason: 'http2_flood', counter: { name: 'meshgate_connections_closed_total', labels: { listener: direction, reason: 'http2_flood' } }, message: /abused the protocol/ });
    await expectReady(sc);
  });

  it.each([
    ['inbound', 'a WINDOW_UPDATE past 2^31-1', frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0x7fffffff)), NGHTTP2_FLOW_CONTROL_ERROR, 'http2_flow_control'],
    ['outbound', 'a WINDOW_UPDATE past 2^31-1', frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0x7fffffff)), NGHTTP2_FLOW_CONTROL_ERROR, 'http2_flow_control'],
    ['inbound', 'a WINDOW_UPDATE of 0', frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0)), NGHTTP2_PROTOCOL_ERROR, 'http2_protocol_error'],
    ['outbound', 'a WINDOW_UPDATE of 0', frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0)), NGHTTP2_PROTOCOL_ERROR, 'http2_protocol_error'],
  ] as const)('%s: %s: GOAWAY with its error code, connection closed, counted', async (direction, _case, attack, code, reason) => {
    const { sc, app } = await sidecarWith();
    const watch = await watchRefusal(sc, [app]);
    const conn = await connectH2(portOf(sc, direction));
    // The request behind it in the same write is never served: the connection error comes first.
    conn.write(Buffer.concat([attack, requestFrame(1, requestFields(AUTHORITY, '/after'))]));
    await conn.closed;
    expect(goawayCode(conn.frames())).toBe(code);
    await watch.refused({ reason, counter: { name: 'meshgate_connections_closed_total', labels: { listener: direction, reason } }, message: /abused the protocol/ });
    await expectReady(sc);
  });

  it.each(['inbound', 'outbound'] as const)(
    '%s: a caller advertising a zero window asks for 64 MiB: the sidecar stops reading the upstream, and the idle timeout ends the stream',
    async (direction) => {
      let written = 0;
      const { sc, app } = await sidecarWith(
        (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/octet-stream' });
          const chunk = Buffer.alloc(64 * 1024, 0x61);
          const pump = (): void => {
            while (written < 64 * MiB) {
              written += chunk.length;
              if (!res.write(chunk)) return void res.once('drain', pump);
            }
            res.end();
          };
          pump();
        },
        { idleTimeout: '1s' },
      );
      const watch = await watchRefusal(sc, [app]);
      const rssBefore = process.memoryUsage().rss;
      const conn = await connectH2(portOf(sc, direction), settingsPayload([[0x4, 0]])); // SETTINGS_INITIAL_WINDOW_SIZE 0
      conn.write(requestFrame(1, requestFields(AUTHORITY, '/big')));
      const { afterMs } = await conn.closed;
      expect(afterMs).toBeGreaterThanOrEqual(900);
      expect(afterMs).toBeLessThan(5000);
      // Nothing but the response head went out, and the upstream was held back by the sidecar's buffers alone.
      expect(conn.frames().filter((f) => f.type === FrameType.DATA && f.payload.length > 0)).toEqual([]);
      expect(written).toBeLessThan(8 * MiB);
      expect(process.memoryUsage().rss - rssBefore).toBeLessThan(48 * MiB);
      // Logged once as meshgate's timeout (504), the upstream having been asked once.
      await watch.refused({ reason: 'upstream.timeout', status: 504, direction, upstreamHits: 1, line: { path: '/big', protocol: 'HTTP/2' } });
      await expectReady(sc);
    },
  );
});

// A header block that decodes to a flood of fields is in h2-headers.test.ts (HPACK bomb); rapid reset in h2-rapid-reset.test.ts.
