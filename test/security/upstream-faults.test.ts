import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FaultMode, FaultUpstream } from '../helpers/fault-upstream.ts';
import { startFaultUpstream } from '../helpers/fault-upstream.ts';
import { connectRaw } from '../helpers/raw-socket.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { watchRefusal } from './catalogue.ts';

/*
 * Issue #10, upstream faults: an app (inbound) or endpoint (outbound) that
 * hangs, resets, never answers, answers in something that is not HTTP, or
 * sends far more than its caller reads. Each case: what the caller saw, one
 * access line with the documented reason, meshgate_requests_total{reason} up
 * by one, and a canary call that still gets its answer (the sidecar did not
 * carry the fault over). The fault upstream counts connections: each case's
 * call reaches it once, as the fault needs.
 */

const TIMEOUT_MS = 400;
const IDLE_MS = 1_000;
const BODY_BYTES = 200 * 1024 * 1024;
/** What the sidecar may hold between a fast upstream and a caller that does not read: kernel buffers on both legs and stream high-water marks. */
const IN_FLIGHT_LIMIT = 48 * 1024 * 1024;
/** RSS growth allowed over a huge-response case (peak, after a full GC before); the 200 MB body must never be held. */
const RSS_GROWTH_LIMIT = 96 * 1024 * 1024;

type Direction = 'inbound' | 'outbound';

/** A full GC in this process (the sidecar runs in it), without starting vitest with --expose-gc. */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** Resident and peak resident size of this process in bytes; `resetPeak` starts a new peak (Linux /proc). */
function memory(opts: { resetPeak?: boolean } = {}): { rss: number; peak: number } {
  collectGarbage();
  if (opts.resetPeak) writeFileSync('/proc/self/clear_refs', '5');
  const status = readFileSync('/proc/self/status', 'utf8');
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)![1]) * 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}

describe.skipIf(process.platform !== 'linux')('upstream faults: the caller gets the documented reason, logged and counted once', () => {
  let fault: FaultUpstream;
  let sc: TestSidecar;
  beforeAll(async () => {
    fault = await startFaultUpstream({ hugeHeaderBytes: 128 * 1024, hugeBodyBytes: BODY_BYTES });
    sc = await startTestSidecar({
      inbound: { app: fault.url, appProtocol: 'http1', timeout: `${TIMEOUT_MS}ms` },
      limits: { idleTimeout: `${IDLE_MS}ms` },
      services: [{ name: 'orders', protocol: 'http1', endpoints: [{ address: fault.address }], routes: [{ timeout: `${TIMEOUT_MS}ms` }] }],
    });
  });
  afterAll(async () => {
    await sc?.drain(100);
    await fault?.close();
  });

  const urlOf = (direction: Direction): string => (direction === 'inbound' ? sc.inboundUrl : sc.outboundUrl);
  const portOf = (direction: Direction): number => (direction === 'inbound' ? sc.inbound.port : sc.outbound.port);

  /** A call through `direction` with the fault upstream in `mode`: its status, reason header and body code. */
  async function callThrough(direction: Direction, mode: FaultMode, path: string) {
    fault.mode = mode;
    const res = await request(`${urlOf(direction)}${path}`, { headers: { host: 'orders' }, reset: true });
    const text = await res.body.text();
    fault.mode = 'ok';
    return { status: res.statusCode, reason: res.headers['x-meshgate-reason'], code: (JSON.parse(text) as { code?: string }).code };
  }

  /** The next call through the same listener is answered: the fault did not outlive its call. */
  async function canary(direction: Direction): Promise<void> {
    fault.mode = 'ok';
    const res = await request(`${urlOf(direction)}/canary`, { headers: { host: 'orders' }, reset: true });
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe('ok');
  }

  it.each([
    ['outbound', 'hang', 504, 'upstream.timeout', 'accepts and never reads: the route timeout'],
    ['inbound', 'hang', 504, 'upstream.timeout', 'accepts and never reads: inbound.timeout'],
    ['outbound', 'blackhole', 504, 'upstream.timeout', 'reads the request, never answers'],
    ['inbound', 'reset', 502, 'upstream.reset', 'resets the connection on accept'],
    ['outbound', 'reset', 502, 'upstream.reset', 'resets the connection on accept'],
    ['inbound', 'invalid-status', 502, 'upstream.protocol_error', 'answers `HTTP/1.1 999 ` and garbage'],
    ['outbound', 'two-content-length', 502, 'upstream.protocol_error', 'answers two different Content-Length values'],
    ['inbound', 'huge-header', 502, 'upstream.protocol_error', 'answers a 128 KiB header'],
  ] as const)('%s, an upstream in mode %s: %i %s (%s)', async (direction, mode, status, reason, _what) => {
    const watch = await watchRefusal(sc, [fault]);
    const started = performance.now();
    const got = await callThrough(direction, mode, `/${mode}`);
    expect(got).toEqual({ status, reason, code: reason });
    if (reason === 'upstream.timeout') expect(performance.now() - started).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    await watch.refused({ reason, status, direction, upstreamHits: 1, line: { path: `/${mode}` } });
    await canary(direction);
  });

  it('outbound, a bad chunk after a 200 head: the caller sees the head and what came before, then a reset; logged 502 upstream.protocol_error', async () => {
    const watch = await watchRefusal(sc, [fault]);
    fault.mode = 'bad-chunk';
    const conn = await connectRaw(portOf('outbound'));
    conn.write('GET /bad-chunk HTTP/1.1\r\nHost: orders\r\n\r\n');
    const { text } = await conn.closed;
    fault.mode = 'ok';
    expect(text).toMatch(/^HTTP\/1.1 200 OK\r\n[\s\S]*\r\n\r\na\r\nfirst part\r\n$/); // no last chunk: never taken for a whole body
    await watch.refused({ reason: 'upstream.protocol_error', status: 502, direction: 'outbound', upstreamHits: 1 });
    await canary('outbound');
  });

  describe('a 200 MB response to a caller that reads slowly or not at all', () => {
    /** A caller that counts what it reads without keeping it. */
    async function hugeCall(direction: Direction) {
      const socket = net.connect(portOf(direction), '127.0.0.1');
      socket.on('error', () => {});
      let received = 0;
      socket.on('data', (chunk: Buffer) => (received += chunk.length));
      const closed = once(socket, 'close');
      await once(socket, 'connect');
      socket.write('GET /huge HTTP/1.1\r\nHost: orders\r\n\r\n');
      while (received === 0) await once(socket, 'data');
      return { socket, closed, received: () => received };
    }

    /** Polls /ready?skip=app (the app check would dial the fault upstream) while `during` runs; returns the slowest answer. */
    async function readyThroughout(during: Promise<unknown>): Promise<number> {
      let slowest = 0;
      let done = false;
      void during.then(
        () => (done = true),
        () => (done = true),
      );
      while (!done) {
        const started = performance.now();
        const res = await request(`${sc.adminUrl}/ready?skip=app`, { signal: AbortSignal.timeout(5_000) });
        expect(res.statusCode).toBe(200);
        await res.body.dump();
        slowest = Math.max(slowest, performance.now() - started);
        await new Promise((resolve) => setTimeout(resolve, 50)); // the pace of the questions, not a wait for a state
      }
      await during;
      return slowest;
    }

    /**
     * Resolves once the upstream has written nothing more for `quietMs`: backpressure reached it.
     * A proof that nothing happens, so a quiet spell is all there is to wait for; bounded, and a
     * failure says how much the upstream kept writing.
     */
    async function upstreamHeldBack(quietMs: number, timeoutMs = 10_000): Promise<number> {
      const deadline = performance.now() + timeoutMs;
      let last = -1;
      while (fault.bodyBytesSent() !== last) {
        if (performance.now() > deadline) throw new Error(`the upstream kept writing for ${timeoutMs} ms: ${fault.bodyBytesSent()} bytes sent`);
        last = fault.bodyBytesSent();
        await new Promise((resolve) => setTimeout(resolve, quietMs));
      }
      return last;
    }

    it('inbound, a caller that stops reading: the app is held back, RSS bounded, /ready answers; the idle timeout ends it: 504 upstream.timeout', async () => {
      const before = memory({ resetPeak: true });
      const watch = await watchRefusal(sc, [fault]);
      const openBefore = fault.open(); // connections of the hang cases stay open on the fault side: it never reads their end
      fault.mode = 'huge-body';
      const caller = await hugeCall('inbound');
      caller.socket.pause(); // reads nothing more
      let held = 0;
      const slowest = await readyThroughout(
        (async () => {
          held = await upstreamHeldBack(200);
          // The sidecar's idle timer: nothing moved on the connection for limits.idleTimeout.
          await watch.refused({ reason: 'upstream.timeout', status: 504, direction: 'inbound', upstreamHits: 1 });
        })(),
      );
      fault.mode = 'ok';
      const after = memory();
      expect(held).toBeLessThan(IN_FLIGHT_LIMIT);
      expect(fault.bodyBytesSent()).toBe(held);
      expect(slowest).toBeLessThan(1_000);
      expect(after.peak - before.rss).toBeLessThan(RSS_GROWTH_LIMIT);
      await expect.poll(() => fault.open()).toBe(openBefore); // the upstream connection was let go
      caller.socket.resume(); // what was on its way, then the end: a truncated body, never a whole one
      await caller.closed;
      expect(caller.received()).toBeLessThan(held);
      console.log(`huge response, stalled reader: upstream held at ${(held / 2 ** 20).toFixed(1)} MiB; RSS peak +${((after.peak - before.rss) / 2 ** 20).toFixed(1)} MiB`);
      await canary('inbound');
    });

    it('outbound, a caller that reads about 256 KiB every 50 ms then hangs up: the upstream stays a bounded amount ahead, RSS bounded; 499 request.cancelled', async () => {
      const before = memory({ resetPeak: true });
      const watch = await watchRefusal(sc, [fault]);
      const openBefore = fault.open(); // connections of the hang cases stay open on the fault side: it never reads their end
      fault.mode = 'huge-body';
      const caller = await hugeCall('outbound');
      let ahead = 0;
      const slowest = await readyThroughout(
        (async () => {
          for (let i = 0; i < 20; i++) {
            caller.socket.pause();
            await new Promise((resolve) => setTimeout(resolve, 50)); // the slow reader's pace: the fault itself
            const target = caller.received() + 256 * 1024;
            caller.socket.resume();
            while (caller.received() < target) await once(caller.socket, 'data');
            ahead = Math.max(ahead, fault.bodyBytesSent() - caller.received());
          }
        })(),
      );
      caller.socket.pause();
      await upstreamHeldBack(100);
      ahead = Math.max(ahead, fault.bodyBytesSent() - caller.received());
      const read = caller.received();
      caller.socket.resetAndDestroy();
      fault.mode = 'ok';
      const after = memory();
      expect(read).toBeGreaterThanOrEqual(20 * 256 * 1024);
      expect(read).toBeLessThan(BODY_BYTES);
      expect(ahead).toBeLessThan(IN_FLIGHT_LIMIT);
      expect(slowest).toBeLessThan(1_000);
      expect(after.peak - before.rss).toBeLessThan(RSS_GROWTH_LIMIT);
      await watch.refused({ reason: 'request.cancelled', status: 499, direction: 'outbound', upstreamHits: 1 });
      await expect.poll(() => fault.open()).toBe(openBefore);
      console.log(
        `huge response, slow reader: read ${(read / 2 ** 20).toFixed(1)} MiB, upstream at most ${(ahead / 2 ** 20).toFixed(1)} MiB ahead; RSS peak +${((after.peak - before.rss) / 2 ** 20).toFixed(1)} MiB`,
      );
      await canary('outbound');
    });
  });
});
