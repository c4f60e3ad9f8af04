import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { REASON_CODES } from '../../../src/core/reason-codes.ts';
import { respond } from '../../../src/core/verdict.ts';
import { sendVerdict } from '../../../src/errors/reply.ts';

/** A real server whose every request is answered by sendVerdict with `verdict`. */
async function answering(handler: (res: http.ServerResponse) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => handler(res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe('sendVerdict: the one place that turns a refusal into a reply', () => {
  let close: (() => Promise<void>) | undefined;
  afterEach(async () => close?.());

  it('answers JSON with the reason code, its status, the rule and the decision id, and nothing more of the policy', async () => {
    const srv = await answering((res) => sendVerdict(res, respond('authz.denied', 'denied by policy', { rule: 'shop/deny#admin', decisionId: 'd-1' }), { grpc: false, requestId: 'r-1' }));
    close = srv.close;
    const res = await request(srv.url);
    expect(res.statusCode).toBe(REASON_CODES['authz.denied'].http);
    expect(res.headers).toMatchObject({ 'x-meshgate-reason': 'authz.denied', 'x-request-id': 'r-1', 'x-meshgate-decision-id': 'd-1', 'content-type': 'application/json' });
    expect(await res.body.json()).toEqual({ code: 'authz.denied', reason: 'denied by policy', decision_id: 'd-1', rule: 'shop/deny#admin', request_id: 'r-1' });
  });

  it('answers with the status the deciding rule chose (a check of your own), the reason code unchanged', async () => {
    const srv = await answering((res) => sendVerdict(res, respond('filter.denied', 'this API key was revoked', { rule: 'shop/keys#revoked', status: 401 }), { grpc: false, requestId: 'r-3' }));
    close = srv.close;
    const res = await request(srv.url);
    expect(res.statusCode).toBe(401);
    expect(res.headers['x-meshgate-reason']).toBe('filter.denied');
    expect(await res.body.json()).toMatchObject({ code: 'filter.denied', rule: 'shop/keys#revoked' });
  });

  it('answers a gRPC caller trailers-only: HTTP 200, grpc-status of the code, the decision id in grpc-message', async () => {
    const srv = await answering((res) => sendVerdict(res, respond('ratelimit.exceeded', 'slow down', { decisionId: 'd-2', headers: { 'retry-after': '1' } }), { grpc: true, requestId: 'r-2' }));
    close = srv.close;
    const res = await request(srv.url);
    expect(res.statusCode).toBe(200);
    expect(res.headers['grpc-status']).toBe(String(REASON_CODES['ratelimit.exceeded'].grpc));
    expect(decodeURIComponent(String(res.headers['grpc-message']))).toBe('ratelimit.exceeded: slow down (decision_id d-2)');
    expect(res.headers['retry-after']).toBe('1');
    expect(await res.body.text()).toBe('');
  });

  it('resets a response that already started instead of appending a second one', async () => {
    const srv = await answering((res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
      sendVerdict(res, respond('upstream.reset', 'gone'), { grpc: false, requestId: 'r-3' });
    });
    close = srv.close;
    // Never a whole response: the request fails, or its body does.
    const outcome = await request(srv.url).then(
      (res) =>
        res.body.text().then(
          () => 'complete',
          () => 'reset',
        ),
      () => 'reset',
    );
    expect(outcome).toBe('reset');
  });
});
