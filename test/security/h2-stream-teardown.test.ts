import { EventEmitter, once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildSidecar } from '../fixtures/child-sidecar.ts';
import { memoryOf, spawnSidecar, stop } from '../fixtures/child-sidecar.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';

/*
 * Issue #10, defect 1: one caller opens many HTTP/2 streams (HEADERS, no
 * END_STREAM) on a route whose upstream speaks HTTP/2, then they all end at
 * once. Node's HTTP/2 client used to spin in native code for good (the
 * process stopped answering anything and grew by hundreds of MB/s). Both
 * directions, both ways of ending: the caller drops its connection, or the
 * sidecar's own timeout fires. The sidecar runs in its own process so a
 * regression cannot hang the test runner, and /ready is watched throughout.
 */

const STREAMS = 1000;
const READY_WITHIN_MS = 1000;
/** RSS may grow by this much over a round; the defect grew by 150-300 MB each second. */
const RSS_GROWTH_LIMIT_KIB = 96 * 1024;

/** An h2c app that reads every request body and never answers: streams stay open until someone ends them. */
async function startSilentH2App() {
  const server = http2.createServer();
  const seen = new EventEmitter();
  let streamsSeen = 0;
  let streamsClosed = 0;
  server.on('stream', (stream) => {
    streamsSeen++;
    seen.emit('stream');
    stream.on('error', () => {});
    stream.on('close', () => {
      streamsClosed++;
      seen.emit('close');
    });
    stream.resume();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** Resolves once the app has `count` streams open. */
    async streamsOpen(count: number): Promise<void> {
      while (streamsSeen < count) await once(seen, 'stream');
    },
    /** Resolves once every stream the app was sent has been closed: the sidecar's teardown reached it. */
    async allClosed(timeoutMs = 5_000): Promise<void> {
      const signal = AbortSignal.timeout(timeoutMs);
      while (streamsClosed < streamsSeen) {
        await once(seen, 'close', { signal }).catch(() => {
          throw new Error(`${streamsSeen - streamsClosed} of ${streamsSeen} upstream streams still open ${timeoutMs} ms on`);
        });
      }
    },
    resetCount: () => void (streamsSeen = streamsClosed = 0),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Polls /ready every 100 ms; `stop()` returns the slowest answer, or throws if one did not come at all. */
function watchReady(adminPort: number) {
  let slowest = 0;
  let failure: string | undefined;
  let running = true;
  const answered = new EventEmitter();
  const loop = (async () => {
    while (running) {
      const started = performance.now();
      try {
        // Waits past the limit so a failure says how slow /ready was, and a hang still ends.
        const res = await request(`http://127.0.0.1:${adminPort}/ready`, { signal: AbortSignal.timeout(5 * READY_WITHIN_MS) });
        await res.body.dump();
        if (res.statusCode !== 200) failure ??= `/ready answered ${res.statusCode}`;
      } catch (err) {
        failure ??= `/ready did not answer within ${5 * READY_WITHIN_MS} ms (${(err as Error).name})`;
      }
      slowest = Math.max(slowest, performance.now() - started);
      answered.emit('answer', started);
      await new Promise((resolve) => setTimeout(resolve, 100)); // the pace of the questions, not a wait for a state
    }
  })();
  return {
    /** Resolves once a /ready asked from now on has been answered (or has failed). */
    async answerAfterNow(): Promise<void> {
      const now = performance.now();
      for (;;) {
        const [started] = (await once(answered, 'answer')) as [number];
        if (started >= now) return;
      }
    },
    async stop(): Promise<number> {
      running = false;
      await loop;
      if (failure) throw new Error(failure);
      return slowest;
    },
  };
}

/** Opens `count` streams on one connection, each with headers and a first body byte but no end of stream. */
async function openStreams(url: string, authority: string, count: number) {
  const session = http2.connect(url);
  session.on('error', () => {});
  await once(session, 'connect');
  const ended: Array<Promise<number | undefined>> = [];
  for (let i = 0; i < count; i++) {
    const stream = session.request({ ':method': 'POST', ':path': `/upload/${i}`, ':authority': authority }, { endStream: false });
    stream.write('x');
    ended.push(
      new Promise((resolve) => {
        stream.on('response', (headers) => resolve(Number(headers[':status'])));
        stream.on('error', () => {});
        stream.on('close', () => resolve(undefined));
        stream.resume();
      }),
    );
  }
  return { session, ended };
}

describe.skipIf(process.platform !== 'linux')('HTTP/2 stream teardown with an HTTP/2 upstream (1 000 streams)', () => {
  let dir: string;
  let app: Awaited<ReturnType<typeof startSilentH2App>>;
  let sidecar: ChildSidecar | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshgate-h2-teardown-'));
    app = await startSilentH2App();
    sidecar = await spawnSidecar(dir, 'orders', {
      workload: { service: 'orders' },
      listeners: { outbound: { address: '127.0.0.1', port: 0 }, inbound: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 } },
      // The sidecar's own timeouts end the held streams in the timeout rounds.
      inbound: { app: `http://${app.address}`, appProtocol: 'http2', timeout: '1s' },
      services: [{ name: 'backend', protocol: 'http2', tls: 'none', endpoints: [{ address: app.address }], routes: [{ timeout: '1s' }] }],
      // Default limits, as the sidecar ships: 250 streams at a time reach it, the rest wait in the
      // caller's queue and follow as the first ones end.
      log: { level: 'info', accessLog: false },
      mtls: { mode: 'DISABLE' },
    });
  });
  afterAll(async () => {
    await stop(sidecar);
    await app?.close();
    await rm(dir, { recursive: true, force: true });
  });

  // Timeout rounds first: after 1 000 cancelled streams the app's own HTTP/2 server (nghttp2's
  // reset-flood guard) may drop its connection from the sidecar, which would turn the next
  // round's 504s on that connection into 502s for a reason that is the app's, not ours.
  const rounds = [
    { direction: 'inbound', ending: 'the app timeout fires' },
    { direction: 'outbound', ending: 'the route timeout fires' },
    { direction: 'inbound', ending: 'the caller closes its connection' },
    { direction: 'outbound', ending: 'the caller closes its connection' },
  ] as const;

  for (const { direction, ending } of rounds) {
    it(`${direction}: ${ending}; /ready answers within 1 s throughout and RSS stays bounded`, async () => {
      const before = await memoryOf(sidecar!, { resetPeak: true });
      const ready = watchReady(sidecar!.admin);
      const port = direction === 'inbound' ? sidecar!.inbound : sidecar!.outbound;
      app.resetCount();
      const { session, ended } = await openStreams(`http://127.0.0.1:${port}`, direction === 'inbound' ? 'orders' : 'backend', STREAMS);
      // undici opens at most 100 streams on one upstream connection and queues the rest: the
      // condition of the defect (a queued request started and aborted in the same turn).
      await app.streamsOpen(100);

      if (ending === 'the caller closes its connection') {
        session.socket.destroy();
        await Promise.all(ended);
      } else {
        const statuses = await Promise.all(ended);
        session.close();
        // Every stream was ended by the sidecar's timer: 504, never a hang or a reset without an answer.
        const counts: Record<string, number> = {};
        for (const s of statuses) counts[String(s)] = (counts[String(s)] ?? 0) + 1;
        expect(counts).toEqual({ 504: STREAMS });
      }
      // The teardown reached the app (every upstream stream closed), then /ready was asked and answered once more.
      await app.allClosed();
      await ready.answerAfterNow();
      const slowest = await ready.stop();
      expect(slowest).toBeLessThan(READY_WITHIN_MS);

      // Streams that end because their connection went away are no rapid reset.
      const metricsText = await (await request(`http://127.0.0.1:${sidecar!.admin}/metrics`)).body.text();
      expect(sumOf(parsePrometheusText(metricsText), 'meshgate_connections_closed_total')).toBe(0);

      const after = await memoryOf(sidecar!);
      expect(after.hwmKiB - before.rssKiB).toBeLessThan(RSS_GROWTH_LIMIT_KIB);
      expect(sidecar!.child.exitCode).toBeNull();
    }, 30_000);
  }
});
