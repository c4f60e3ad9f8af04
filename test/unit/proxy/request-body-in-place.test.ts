import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createValidateFilter } from '../../../src/filters/validate/validate-filter.ts';
import { createBodyBudget } from '../../../src/proxy/body-budget.ts';
import { H1Request } from '../../../src/proxy/h1-server-request.ts';
import type { DownstreamRequest } from '../../../src/proxy/listener.ts';
import { createRequestBody } from '../../../src/proxy/request-body.ts';
import { validateRuntime } from '../../helpers/filter-runtimes.ts';
import { policyDoc } from '../../helpers/static-policy.ts';

/*
 * A small request body usually arrives with its head, in the same read. A
 * filter that checks it (validate) reads it where it is: at once, with no
 * stream taken apart, and the request still goes upstream as one write of
 * head and body, as when no filter reads the body.
 */

const BODY = Buffer.from('{"item":"ABC-123","qty":2}');

/** An HTTP/1.1 request as the listener makes it; `whole`: the body that came with the head. */
function h1Request(whole: Buffer | undefined, headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(BODY.length) }): H1Request {
  const head = { method: 'POST', url: '/orders', minorVersion: 1, rawHeaders: [], headers, hasBody: true, keepAlive: true, expectsContinue: false, wholeBody: whole };
  return new H1Request(head, {} as Socket, { bodyWanted: () => {} });
}

describe('a request body that came whole with its head', () => {
  it('is read at once, counted in the budget until the call ends, and still goes upstream whole with the head', async () => {
    const req = h1Request(BODY);
    const budget = createBodyBudget(1024);
    const end = new EventEmitter();
    const body = createRequestBody(req as unknown as DownstreamRequest, budget, end);
    const now = body.readNow!(4096);
    expect(now).toEqual({ kind: 'complete', bytes: BODY });
    expect(await body.read(4096)).toBe(now);
    expect(budget.inUse()).toBe(BODY.length);
    // Nothing was taken from the request: the upstream connection takes the body whole, with the head.
    expect(body.forwardable()).toBe(req);
    expect(req.takeWhole()).toEqual(BODY);
    end.emit('close');
    expect(budget.inUse()).toBe(0);
  });

  it('over the limit: refused at once by its Content-Length, and the whole body is still there to forward', () => {
    const req = h1Request(BODY);
    const body = createRequestBody(req as unknown as DownstreamRequest);
    expect(body.readNow!(10)).toEqual({ kind: 'too_large', received: 0 });
    expect(body.forwardable()).toBe(req);
    expect(req.takeWhole()).toEqual(BODY);
  });

  it('over the sidecar-wide budget: answered at once, and nothing is lost if the call goes on', () => {
    const req = h1Request(BODY);
    const body = createRequestBody(req as unknown as DownstreamRequest, createBodyBudget(BODY.length - 1), new EventEmitter());
    expect(body.readNow!(4096)).toEqual({ kind: 'over_budget' });
    expect(body.forwardable()).toBe(req);
    expect(req.takeWhole()).toEqual(BODY);
  });

  it('a body still arriving is waited for: nothing at once, then read() gets all of it', async () => {
    const req = h1Request(undefined, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    const body = createRequestBody(req as unknown as DownstreamRequest);
    expect(body.readNow!(4096)).toBeUndefined();
    const read = body.read(4096);
    req.received(BODY.subarray(0, 10));
    req.received(BODY.subarray(10));
    req.ended();
    expect(await read).toEqual({ kind: 'complete', bytes: BODY });
    // Settled: at once from now on, the same answer.
    expect(body.readNow!(4096)).toEqual({ kind: 'complete', bytes: BODY });
  });
});

describe('validation of a body that came with its head', () => {
  const filter = createValidateFilter(
    [
      policyDoc('ValidationPolicy', 'orders', {
        rules: [{ name: 'create', match: { paths: ['/orders'] }, jsonSchema: { type: 'object', required: ['item'], properties: { item: { type: 'string', pattern: '^[A-Z]{3}-[0-9]+$' } } } }],
      }),
    ],
    validateRuntime({ maxBodyBuffer: 4096 }),
  );
  const call = (whole: Buffer) => {
    const req = h1Request(whole, { 'content-type': 'application/json', 'content-length': String(whole.length) });
    return {
      id: 'r1',
      direction: 'inbound' as const,
      startedAt: 0,
      method: 'POST',
      path: '/orders',
      query: '',
      authority: 'orders',
      headers: req.headers,
      httpVersion: '1.1' as const,
      isGrpc: false,
      source: { address: '10.0.0.5', port: 1234, principal: undefined },
      destination: { service: 'orders', namespace: 'shop' },
      annotations: { retries: 0 },
      body: createRequestBody(req as unknown as DownstreamRequest),
    };
  };

  it('decides without waiting: a valid body passes and an invalid one is refused, on the spot', () => {
    // A verdict, not a promise: the call goes on (or is answered) in the same turn of the event loop.
    expect(filter.onRequest(call(BODY))).toEqual({ kind: 'continue' });
    expect(filter.onRequest(call(Buffer.from('{"item":"abc"}')))).toMatchObject({ kind: 'respond', code: 'validate.schema' });
  });
});
