import type http from 'node:http';
import http2 from 'node:http2';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { startAppAndSidecar } from '../helpers/app-sidecar.ts';
import { eventually } from '../helpers/eventually.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { policyDoc } from '../helpers/static-policy.ts';

/*
 * Throttle and concurrency rules of a RateLimitPolicy through a real sidecar
 * (inbound listener -> filters -> app): a burst over a throttled rate is
 * delayed at the rate, then refused past the queue bound; a concurrency rule
 * lets exactly max calls reach an app that holds them, queues the next ones
 * and refuses the rest, and gets every slot back when calls end, fail or are
 * abandoned by their caller.
 */

describe('RateLimitPolicy throttle and concurrency through a sidecar', () => {
  let pair: AppAndSidecar;
  let sc: TestSidecar;
  /** Responses the app holds, released by the test. */
  const held: http.ServerResponse[] = [];
  const agent = new Agent({ connections: 64 });

  const app: http.RequestListener = (req, res) => {
    if (req.url?.startsWith('/slow/')) return void held.push(res);
    if (req.url?.startsWith('/boom/')) return void req.socket.destroy(); // an upstream error
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  };
  const releaseHeld = (): void => {
    for (const res of held.splice(0)) res.end('done');
  };

  beforeAll(async () => {
    pair = await startAppAndSidecar({
      app,
      policy: [
        policyDoc('RateLimitPolicy', 'orders-limits', {
          rules: [
            // One call per 200 ms, one at once; three may wait up to 2 s.
            { name: 'burst', match: { paths: ['/burst'] }, key: ['source.ip'], limit: { requests: 5, per: '1s' }, burst: 1, throttle: { queue: 3, maxDelay: '2s' } },
            { name: 'slow', match: { paths: ['/slow/*'] }, concurrency: { max: 2, queue: 2, maxWait: '10s' } },
            { name: 'boom', match: { paths: ['/boom/*'] }, concurrency: { max: 2 } },
          ],
        }),
      ],
      config: () => ({ log: { level: 'warn', accessLog: false } }),
    });
    ({ sc } = pair);
  });
  afterAll(async () => {
    releaseHeld();
    await agent.close();
    await pair?.close();
  });

  const get = async (p: string, signal?: AbortSignal) => {
    const res = await request(`${sc.inboundUrl}${p}`, { headers: { host: 'orders.shop' }, dispatcher: agent, signal });
    const text = await res.body.text();
    return { status: res.statusCode, code: res.statusCode === 200 ? undefined : (JSON.parse(text) as { code: string }).code, retryAfter: res.headers['retry-after'] };
  };
  const metrics = async () => parsePrometheusText(await (await request(`${sc.adminUrl}/metrics`)).body.text());
  const gauge = async (name: string, rule: string) => sumOf(await metrics(), name, { policy: 'shop/orders-limits', rule });

  /** Sends `n` GETs on one HTTP/2 connection opened first: the sidecar reads them in one go, however loaded the machine. */
  const h2Burst = async (p: string, n: number) => {
    const session = http2.connect(sc.inboundUrl);
    try {
      await new Promise<void>((resolve, reject) => session.once('connect', () => resolve()).once('error', reject));
      const started = performance.now();
      return await Promise.all(
        Array.from(
          { length: n },
          () =>
            new Promise<{ status: number; code: string | undefined; retryAfter: string | undefined; ms: number }>((resolve, reject) => {
              const stream = session.request({ ':path': p, ':authority': 'orders.shop' });
              let head: http2.IncomingHttpHeaders = {};
              let body = '';
              stream.on('response', (h) => (head = h));
              stream.setEncoding('utf8');
              stream.on('data', (c: string) => (body += c));
              stream.on('error', reject);
              stream.on('end', () => {
                const status = Number(head[':status']);
                const code = status === 200 ? undefined : (JSON.parse(body) as { code: string }).code;
                resolve({ status, code, retryAfter: head['retry-after'] as string | undefined, ms: performance.now() - started });
              });
              stream.end();
            }),
        ),
      );
    } finally {
      session.close();
    }
  };

  it('delays a burst at the rate, then refuses the callers past the queue bound with 429', async () => {
    const answers = await h2Burst('/burst', 6);
    const ok = answers.filter((a) => a.status === 200).sort((a, b) => a.ms - b.ms);
    const refused = answers.filter((a) => a.status !== 200);
    expect(ok).toHaveLength(4); // one at once, three released from the queue
    expect(refused.map((a) => [a.status, a.code, a.retryAfter])).toEqual([
      [429, 'ratelimit.throttle_queue_full', '1'],
      [429, 'ratelimit.throttle_queue_full', '1'],
    ]);
    // Released one per 200 ms, never earlier (timers do not fire early; later is the loaded machine).
    for (let i = 1; i < 4; i++) expect(ok[i]!.ms).toBeGreaterThanOrEqual(i * 200 - 5);
    const m = await metrics();
    expect(sumOf(m, 'meshgate_ratelimit_decisions_total', { rule: 'burst', decision: 'allowed' })).toBe(1);
    expect(sumOf(m, 'meshgate_ratelimit_decisions_total', { rule: 'burst', decision: 'delayed' })).toBe(3);
    expect(sumOf(m, 'meshgate_ratelimit_decisions_total', { rule: 'burst', decision: 'throttle_queue_full' })).toBe(2);
  });

  it('lets exactly max calls reach a slow app, queues the next, refuses the rest with 503, and admits the queued as calls end', async () => {
    const calls = Array.from({ length: 6 }, (_, i) => get(`/slow/${i}`));
    // Which two are refused depends on the order they reach the sidecar: two refusals among the six.
    const settled: Awaited<(typeof calls)[number]>[] = [];
    for (const c of calls) void c.then((r) => settled.push(r));
    await eventually(() => settled.length === 2 && held.length === 2, { what: '2 answered, 2 at the app' });
    expect(settled.filter((r) => r.status === 503).map((r) => [r.code, r.retryAfter])).toEqual([
      ['ratelimit.concurrency_exceeded', '1'],
      ['ratelimit.concurrency_exceeded', '1'],
    ]);
    expect(await gauge('meshgate_ratelimit_in_flight', 'slow')).toBe(2);
    expect(await gauge('meshgate_ratelimit_queued', 'slow')).toBe(2);
    expect(held).toHaveLength(2); // the queued two have not reached the app
    releaseHeld();
    await eventually(() => held.length === 2, { what: 'the queued calls at the app' });
    releaseHeld();
    const all = await Promise.all(calls);
    expect(all.filter((r) => r.status === 200)).toHaveLength(4);
    await eventually(() => gauge('meshgate_ratelimit_in_flight', 'slow'), { until: (v) => v === 0, what: 'no slot held' });
  });

  it('takes a caller that leaves out of the queue', async () => {
    const first = [get('/slow/a'), get('/slow/b')];
    await eventually(() => held.length === 2, { what: 'two at the app' });
    const leaving = new AbortController();
    const queued = get('/slow/c', leaving.signal).catch((e: Error) => e.name);
    await eventually(() => gauge('meshgate_ratelimit_queued', 'slow'), { until: (v) => v === 1, what: 'one queued' });
    leaving.abort();
    expect(await queued).toBe('AbortError');
    await eventually(() => gauge('meshgate_ratelimit_queued', 'slow'), { until: (v) => v === 0, what: 'the queue empty once its caller left' });
    // An HTTP/2 caller that resets its stream leaves the queue too.
    const session = http2.connect(sc.inboundUrl);
    try {
      const stream = session.request({ ':path': '/slow/d', ':authority': 'orders.shop' });
      stream.on('error', () => {});
      await eventually(() => gauge('meshgate_ratelimit_queued', 'slow'), { until: (v) => v === 1, what: 'the HTTP/2 call queued' });
      stream.close(http2.constants.NGHTTP2_CANCEL);
      await eventually(() => gauge('meshgate_ratelimit_queued', 'slow'), { until: (v) => v === 0, what: 'the queue empty once the stream was reset' });
    } finally {
      session.destroy();
    }
    releaseHeld();
    expect((await Promise.all(first)).map((r) => r.status)).toEqual([200, 200]);
    expect(held).toHaveLength(0); // the caller that left never reached the app
  });

  it('gets every slot back from calls their caller abandoned and from upstream errors: the limit still admits max', async () => {
    for (let i = 0; i < 10; i++) {
      const leaving = new AbortController();
      const call = get(`/slow/abandoned-${i}`, leaving.signal).catch((e: Error) => e.name);
      await eventually(() => held.length === 1, { what: 'the call at the app' });
      leaving.abort();
      expect(await call).toBe('AbortError');
      held.splice(0); // its response is never written: the sidecar saw the caller go
      await eventually(() => gauge('meshgate_ratelimit_in_flight', 'slow'), { until: (v) => v === 0, what: 'its slot back' });
    }
    for (let i = 0; i < 10; i++) expect((await get(`/boom/${i}`)).status).toBe(502);
    expect(await gauge('meshgate_ratelimit_in_flight', 'boom')).toBe(0);
    // Still exactly two at once on each rule.
    const slow = [get('/slow/x'), get('/slow/y')];
    await eventually(() => held.length === 2, { what: 'two at the app' });
    expect(await gauge('meshgate_ratelimit_in_flight', 'slow')).toBe(2);
    releaseHeld();
    expect((await Promise.all(slow)).map((r) => r.status)).toEqual([200, 200]);
  });
});
