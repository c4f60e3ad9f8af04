import type http from 'node:http';
import { Agent, Pool, request } from 'undici';
import { describe, expect, it } from 'vitest';
import { respond } from '../../../src/core/verdict.ts';
import { sendVerdict } from '../../../src/errors/reply.ts';
import { forward } from '../../../src/proxy/forward.ts';
import type { AttemptResult, ForwardOutcome, ForwardRequest, RetryPlan, UpstreamTarget } from '../../../src/proxy/upstream-call.ts';
import { deferAfterEach } from '../../helpers/cleanup.ts';
import type { TestServer } from '../../helpers/servers.ts';
import { answer, startHttpServer } from '../../helpers/servers.ts';

/*
 * The stages of one upstream call (src/proxy/forward.ts: route deadline,
 * retry attempts, per-try deadline, upstream attempt, relay), driven through
 * forward() as the stacks drive it: a real caller, a real node:http server
 * relaying with forward(), real upstreams on loopback. Each case asserts what
 * the caller got, what the upstreams saw, what each endpoint's cluster was
 * told, and that every retry-budget slot taken was given back.
 */

const defer = deferAfterEach();

async function upstream(handler: http.RequestListener): Promise<TestServer> {
  const server = await startHttpServer(handler);
  defer(() => server.close());
  return server;
}

/** Never answers: the attempt waits for a deadline. */
const hang: http.RequestListener = () => {};

interface Endpoint extends UpstreamTarget {
  readonly results: AttemptResult[];
}

function endpoint(server: TestServer): Endpoint {
  const pool = new Pool(server.url);
  defer(() => pool.destroy());
  const results: AttemptResult[] = [];
  return { dispatcher: pool, label: server.address, results, done: (r) => results.push(r) };
}

/** A retry plan that counts its budget: `held()` is the slots taken and not given back. */
function plan(over: Partial<RetryPlan> = {}): RetryPlan & { acquired: () => number; held: () => number } {
  let acquired = 0;
  let released = 0;
  return {
    attempts: 1,
    perTryTimeoutMs: 10_000,
    bufferLimit: 64 * 1024,
    replaysBody: true,
    shouldRetryResponse: (status) => status === 503,
    shouldRetryFailure: (failure) => failure === 'timeout' || failure === 'reset' || failure === 'connect-failure',
    backoffMs: () => 0,
    acquire: () => (acquired++, true),
    release: () => void released++,
    ...over,
    acquired: () => acquired,
    held: () => acquired - released,
  };
}

interface Caller {
  /** Sends one GET through forward(); resolves with what the caller saw and the call's outcome. */
  get(): Promise<{ status: number; reason: string | undefined; body: string; headers: http.IncomingHttpHeaders; outcome: ForwardOutcome }>;
  /** Same, for a call whose response the caller cannot read to the end (reset mid-body). */
  getBroken(): Promise<{ error: unknown; outcome: ForwardOutcome }>;
}

async function caller(call: Omit<ForwardRequest, 'method' | 'path' | 'headers' | 'body' | 'bodyTimeoutMs'> & { headers?: Record<string, string> }): Promise<Caller> {
  const outcomes: Array<Promise<ForwardOutcome>> = [];
  const server = await upstream((req, res) => {
    outcomes.push(
      forward({ method: 'GET', path: req.url!, body: null, bodyTimeoutMs: 10_000, ...call, headers: { 'x-request-id': 'test', ...call.headers } }, res, (code, reason) =>
        sendVerdict(res, respond(code, reason), { grpc: false, requestId: 'test' }),
      ),
    );
  });
  const agent = new Agent();
  defer(() => agent.destroy());
  const url = `${server.url}/orders`;
  return {
    async get() {
      const res = await request(url, { dispatcher: agent });
      const body = await res.body.text();
      const reason = res.headers['x-meshgate-reason'] as string | undefined;
      return { status: res.statusCode, reason, body, headers: res.headers as http.IncomingHttpHeaders, outcome: await outcomes.at(-1)! };
    },
    async getBroken() {
      const error = await request(url, { dispatcher: agent }).then(
        (res) =>
          res.body.text().then(
            () => undefined,
            (err: unknown) => err,
          ),
        (err: unknown) => err,
      );
      return { error, outcome: await outcomes.at(-1)! };
    },
  };
}

/** Picks the first endpoint not tried yet, as a cluster with spare endpoints does. */
const inOrder =
  (...endpoints: Endpoint[]) =>
  (tried: ReadonlySet<string>) =>
    endpoints.find((e) => !tried.has(e.label));

describe('forward: retries', () => {
  it('retries a 503 on the next endpoint and relays only the second answer; the budget slot is given back', async () => {
    const a = endpoint(await upstream(answer(503, 'busy', { 'x-from': 'a' })));
    const b = endpoint(await upstream(answer(200, 'ok')));
    const retry = plan();
    const got = await (await caller({ timeoutMs: 5_000, retry, pick: inOrder(a, b) })).get();
    expect(got).toMatchObject({ status: 200, body: 'ok' });
    expect(got.headers['x-from']).toBeUndefined();
    expect(got.outcome).toMatchObject({ status: 200, reason: undefined, upstream: b.label, retries: 1, bytesOut: 2 });
    expect(a.results).toMatchObject([{ kind: 'response', status: 503 }]);
    expect(b.results).toMatchObject([{ kind: 'response', status: 200 }]);
    expect(retry.acquired()).toBe(1);
    expect(retry.held()).toBe(0);
  });

  it('drains and drops a retried response larger than 64 KiB, and still retries', async () => {
    const a = endpoint(await upstream(answer(503, 'x'.repeat(200 * 1024))));
    const b = endpoint(await upstream(answer(200, 'ok')));
    const retry = plan();
    const got = await (await caller({ timeoutMs: 5_000, retry, pick: inOrder(a, b) })).get();
    expect(got).toMatchObject({ status: 200, body: 'ok' });
    expect(got.outcome.retries).toBe(1);
    expect(retry.held()).toBe(0);
  });

  it('relays the last answer when no attempt is left, and a budget refusal stops retries', async () => {
    const a = endpoint(await upstream(answer(503, 'busy-a')));
    const b = endpoint(await upstream(answer(503, 'busy-b')));
    const c = endpoint(await upstream(answer(200, 'never')));
    const noBudget = plan({ attempts: 2, acquire: () => false });
    const first = await (await caller({ timeoutMs: 5_000, retry: noBudget, pick: inOrder(a, b, c) })).get();
    expect(first).toMatchObject({ status: 503, body: 'busy-a', reason: undefined });
    const retry = plan({ attempts: 1 });
    const second = await (await caller({ timeoutMs: 5_000, retry, pick: inOrder(b, a, c) })).get();
    expect(second).toMatchObject({ status: 503, body: 'busy-a' });
    expect(second.outcome.retries).toBe(1);
    expect(retry.held()).toBe(0);
  });

  it('retries only before the first response byte: a reset mid-body resets the caller, with no second attempt', async () => {
    const a = endpoint(
      await upstream((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('partial', () => res.socket?.destroy());
      }),
    );
    const bServer = await upstream(answer(200, 'ok'));
    const b = endpoint(bServer);
    const retry = plan({ attempts: 3 });
    const got = await (await caller({ timeoutMs: 5_000, retry, pick: inOrder(a, b) })).getBroken();
    expect(got.error).toBeInstanceOf(Error);
    expect(got.outcome).toMatchObject({ status: 502, reason: 'upstream.reset', upstream: a.label, retries: 0 });
    expect(a.results).toMatchObject([{ kind: 'failure', failure: 'reset' }]);
    expect(bServer.hits()).toBe(0);
    expect(retry.acquired()).toBe(0);
  });

  it('answers 503 upstream.unavailable when no endpoint is left to pick', async () => {
    const got = await (await caller({ timeoutMs: 5_000, retry: undefined, pick: () => undefined })).get();
    expect(got).toMatchObject({ status: 503, reason: 'upstream.unavailable' });
    expect(got.outcome).toMatchObject({ status: 503, reason: 'upstream.unavailable', upstream: undefined });
  });

  it('a request undici will not send reaches no upstream and is not retried (502 upstream.reset, as before)', async () => {
    // undici reports an invalid header value to the handler (UND_ERR_INVALID_ARG), it does not throw.
    const aServer = await upstream(answer(200, 'never'));
    const bServer = await upstream(answer(200, 'never'));
    const a = endpoint(aServer);
    const b = endpoint(bServer);
    const retry = plan({ attempts: 2 });
    const got = await (await caller({ timeoutMs: 5_000, retry, headers: { 'x-bad': 'a\nb' }, pick: inOrder(a, b) })).get();
    expect(got).toMatchObject({ status: 502, reason: 'upstream.reset' });
    expect(got.outcome).toMatchObject({ status: 502, reason: 'upstream.reset', retries: 0 });
    expect(a.results).toMatchObject([{ kind: 'failure', failure: 'other' }]);
    expect([aServer.hits(), bServer.hits()]).toEqual([0, 0]);
    expect(retry.acquired()).toBe(0);
  });
});

describe('forward: deadlines', () => {
  it('a per-try timeout is retried on the next endpoint', async () => {
    const a = endpoint(await upstream(hang));
    const b = endpoint(await upstream(answer(200, 'ok')));
    const retry = plan({ perTryTimeoutMs: 100 });
    const got = await (await caller({ timeoutMs: 10_000, retry, pick: inOrder(a, b) })).get();
    expect(got).toMatchObject({ status: 200, body: 'ok' });
    expect(got.outcome).toMatchObject({ upstream: b.label, retries: 1 });
    expect(a.results).toMatchObject([{ kind: 'failure', failure: 'timeout' }]);
    expect(retry.held()).toBe(0);
  });

  it('a per-try timeout with no attempt left answers 504 upstream.timeout', async () => {
    const aServer = await upstream(hang);
    const bServer = await upstream(hang);
    const a = endpoint(aServer);
    const b = endpoint(bServer);
    const retry = plan({ perTryTimeoutMs: 100 });
    const got = await (await caller({ timeoutMs: 10_000, retry, pick: inOrder(a, b) })).get();
    expect(got).toMatchObject({ status: 504, reason: 'upstream.timeout' });
    expect(JSON.parse(got.body)).toMatchObject({ code: 'upstream.timeout' });
    expect(got.outcome).toMatchObject({ status: 504, reason: 'upstream.timeout', upstream: b.label, retries: 1 });
    expect([aServer.hits(), bServer.hits()]).toEqual([1, 1]);
    expect(b.results).toMatchObject([{ kind: 'failure', failure: 'timeout' }]);
    expect(retry.held()).toBe(0);
  });

  it('the route timeout ends the call with attempts left: 504 upstream.timeout, no further attempt', async () => {
    const a = endpoint(await upstream(hang));
    const bServer = await upstream(answer(200, 'ok'));
    const b = endpoint(bServer);
    const retry = plan({ attempts: 3 }); // per-try (10 s) longer than the route: only the route's deadline runs
    const got = await (await caller({ timeoutMs: 150, retry, pick: inOrder(a, b) })).get();
    expect(got).toMatchObject({ status: 504, reason: 'upstream.timeout' });
    expect(got.outcome).toMatchObject({ status: 504, reason: 'upstream.timeout', upstream: a.label, retries: 0 });
    expect(a.results).toMatchObject([{ kind: 'failure', failure: 'timeout' }]);
    expect(bServer.hits()).toBe(0);
    expect(retry.acquired()).toBe(0);
  });

  it('the route timeout passing during a backoff sends no further attempt and gives the budget slot back', async () => {
    const a = endpoint(await upstream(answer(503, 'busy')));
    const bServer = await upstream(answer(200, 'ok'));
    const b = endpoint(bServer);
    const retry = plan({ backoffMs: () => 400 });
    const got = await (await caller({ timeoutMs: 100, retry, pick: inOrder(a, b) })).get();
    expect(got).toMatchObject({ status: 504, reason: 'upstream.timeout' });
    expect(got.outcome.retries).toBe(1);
    expect(bServer.hits()).toBe(0);
    expect(retry.acquired()).toBe(1);
    expect(retry.held()).toBe(0);
  });

  it('no deadline runs once the head is relayed: a slow body is not cut by the route timeout', async () => {
    const a = endpoint(
      await upstream((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first ');
        setTimeout(() => res.end('last'), 300);
      }),
    );
    const got = await (await caller({ timeoutMs: 100, retry: plan({ perTryTimeoutMs: 50 }), pick: inOrder(a) })).get();
    expect(got).toMatchObject({ status: 200, body: 'first last' });
    expect(got.outcome).toMatchObject({ status: 200, reason: undefined, retries: 0 });
  });
});

describe('forward: a caller that left', () => {
  it('before the call started (an HTTP/2 stream reset while the filters ran): nothing is sent upstream, 499 request.cancelled', async () => {
    const app = await upstream(hang);
    const target = endpoint(app);
    let outcome!: Promise<ForwardOutcome>;
    let started!: () => void;
    const forwarding = new Promise<void>((resolve) => (started = resolve));
    const server = await upstream((req, res) => {
      req.socket.destroy();
      // The caller's 'close' has fired before forward() is called: it must not wait for it.
      res.once('close', () => {
        outcome = forward({ method: 'GET', path: req.url!, body: null, bodyTimeoutMs: 10_000, headers: {}, timeoutMs: 10_000, retry: undefined, pick: inOrder(target) }, res, () => {});
        started();
      });
    });
    void request(`${server.url}/orders`).catch(() => undefined);
    await forwarding;
    // Before the fix the call went to the app that never answers, and never settled.
    const settled = await Promise.race([outcome, new Promise<'unsettled'>((resolve) => setTimeout(() => resolve('unsettled'), 2_000))]);
    expect(settled).toMatchObject({ status: 499, reason: 'request.cancelled', retries: 0 });
    expect(app.hits()).toBe(0);
    expect(target.results).toEqual([{ kind: 'failure', failure: 'aborted' }]); // the caller's doing: no mark against the endpoint
  });
});
