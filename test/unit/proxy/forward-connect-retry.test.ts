import type http from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import { Agent, Pool, request } from 'undici';
import { describe, expect, it } from 'vitest';
import { respond } from '../../../src/core/verdict.ts';
import { sendVerdict } from '../../../src/errors/reply.ts';
import { createRetryBudget } from '../../../src/outbound/retry-budget.ts';
import { createConnectRetryPlan } from '../../../src/outbound/retry-plan.ts';
import { forward } from '../../../src/proxy/forward.ts';
import type { AttemptResult, ForwardOutcome, RetryPlan, UpstreamTarget } from '../../../src/proxy/upstream-call.ts';
import { deferAfterEach } from '../../helpers/cleanup.ts';
import { freePort } from '../../helpers/process.ts';
import { startHttpServer } from '../../helpers/servers.ts';

/*
 * The retries of a route that sets none (src/outbound/retry-plan.ts,
 * createConnectRetryPlan): a call whose endpoint refuses the connection is
 * sent to another endpoint, POST and its body included, with nothing buffered
 * for a replay; a failure after the body was read is never retried by it.
 * Driven through forward() with a real caller, a relaying node:http server
 * and real upstreams on loopback, as forward.test.ts does.
 */

const defer = deferAfterEach();

interface Endpoint extends UpstreamTarget {
  readonly results: AttemptResult[];
}

function endpointAt(origin: string, label: string): Endpoint {
  const pool = new Pool(origin);
  defer(() => pool.destroy());
  const results: AttemptResult[] = [];
  return { dispatcher: pool, label, results, done: (r) => results.push(r) };
}

/** An address where nothing listens (a port the OS gave out and took back). */
async function deadEndpoint(): Promise<Endpoint> {
  const port = await freePort();
  return endpointAt(`http://127.0.0.1:${port}`, `127.0.0.1:${port}`);
}

/** An upstream that answers 200 with the body it was sent. */
async function echoEndpoint(): Promise<{ endpoint: Endpoint; bodies: string[] }> {
  const bodies: string[] = [];
  const server = await startHttpServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      bodies.push(body);
      res.end(`got ${body}`);
    });
  });
  defer(() => server.close());
  return { endpoint: endpointAt(server.url, server.address), bodies };
}

/** POSTs `body` through forward() with `retry`, picking the first endpoint not tried yet. */
async function post(
  retry: RetryPlan | undefined,
  endpoints: Endpoint[],
  body: string,
  bodyOf: (req: http.IncomingMessage) => Readable = (req) => req,
): Promise<{ status: number; text: string; outcome: ForwardOutcome }> {
  let outcome: Promise<ForwardOutcome> | undefined;
  const relay = await startHttpServer((req: http.IncomingMessage, res: http.ServerResponse) => {
    outcome = forward(
      {
        method: 'POST',
        path: req.url!,
        headers: { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) },
        body: bodyOf(req),
        timeoutMs: 5_000,
        bodyTimeoutMs: 5_000,
        retry,
        pick: (tried) => endpoints.find((e) => !tried.has(e.label)),
      },
      res,
      (code, reason) => sendVerdict(res, respond(code, reason), { grpc: false, requestId: 'test' }),
    );
  });
  defer(() => relay.close());
  const agent = new Agent();
  defer(() => agent.destroy());
  const res = await request(`${relay.url}/orders`, { method: 'POST', body, headers: { 'content-type': 'text/plain' }, dispatcher: agent });
  const text = await res.body.text();
  return { status: res.statusCode, text, outcome: await outcome! };
}

const budget = () => createRetryBudget({ percent: 20, minConcurrency: 3 });
const noJitter = () => 0;

describe('a route without retries: connect failures go to another endpoint', () => {
  it('a POST whose first endpoint refuses the connection is sent, body and all, to the next one', async () => {
    const dead = await deadEndpoint();
    const live = await echoEndpoint();
    const got = await post(
      createConnectRetryPlan(budget(), () => 1, noJitter),
      [dead, live.endpoint],
      'order #1',
    );
    expect(got).toMatchObject({ status: 200, text: 'got order #1' });
    expect(got.outcome).toMatchObject({ status: 200, upstream: live.endpoint.label, retries: 1 });
    expect(dead.results).toMatchObject([{ kind: 'failure', failure: 'connect-failure' }]);
    expect(live.bodies).toEqual(['order #1']);
  });

  it('without the plan the same call is a 503, as before', async () => {
    const dead = await deadEndpoint();
    const live = await echoEndpoint();
    const got = await post(undefined, [dead, live.endpoint], 'order #2');
    expect(got).toMatchObject({ status: 503 });
    expect(live.bodies).toEqual([]);
  });

  it('two dead endpoints, then a live one: both retries are used; a fourth endpoint is never needed', async () => {
    const [a, b] = [await deadEndpoint(), await deadEndpoint()];
    const live = await echoEndpoint();
    const got = await post(
      createConnectRetryPlan(budget(), () => 1, noJitter),
      [a, b, live.endpoint],
      'order #3',
    );
    expect(got.outcome).toMatchObject({ status: 200, retries: 2 });
    expect(live.bodies).toEqual(['order #3']);
  });

  it('a body some other reader already consumes is not sent to a second endpoint: nothing was kept to replay', async () => {
    const dead = await deadEndpoint();
    const live = await echoEndpoint();
    const plan = createConnectRetryPlan(budget(), () => 1, noJitter);
    // A consumer attached before the call, and no byte of the body here yet: it is no longer the call's alone.
    const watched = new PassThrough();
    watched.on('data', () => {});
    defer(() => watched.end());
    const got = await post(plan, [dead, live.endpoint], 'order #5', () => watched);
    expect(got.status).toBe(503);
    expect(live.bodies).toEqual([]);
  });

  it('a failure after the body left is not retried, even by a plan that would retry it: nothing was kept to replay', async () => {
    // Reads the whole body, then drops the connection without an answer: a reset, after the bytes left.
    const bodies: string[] = [];
    const reader = await startHttpServer((req) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        bodies.push(body);
        req.socket.destroy();
      });
    });
    defer(() => reader.close());
    const first = endpointAt(reader.url, reader.address);
    const live = await echoEndpoint();
    const plan = { ...createConnectRetryPlan(budget(), () => 1, noJitter), shouldRetryFailure: () => true };
    const got = await post(plan, [first, live.endpoint], 'order #4');
    expect(got.status).toBe(502);
    expect(bodies).toEqual(['order #4']);
    expect(first.results).toMatchObject([{ kind: 'failure', failure: 'reset' }]);
    expect(live.bodies).toEqual([]);
  });
});
