import { describe, expect, it } from 'vitest';
import type { Verdict } from '../../../src/core/verdict.ts';
import type { AnyResponse } from '../../../src/errors/reply.ts';
import { sendVerdict } from '../../../src/errors/reply.ts';
import { createAuthzFilter } from '../../../src/filters/authz/authz-filter.ts';
import { authzRuntime } from '../../helpers/filter-runtimes.ts';
import { call, fixedRandom, policy } from './authz-fixtures.ts';

/** Records what sendVerdict writes. */
function fakeResponse() {
  const headers: Record<string, string | number> = {};
  const out = { statusCode: 0, body: '', headers };
  const res = {
    headersSent: false,
    set statusCode(code: number) {
      out.statusCode = code;
    },
    setHeader: (name: string, value: string | number) => void (headers[name] = value),
    end: (body?: string) => void (out.body = body ?? ''),
    destroy: () => {},
  };
  return { res: res as unknown as AnyResponse, out };
}

const docs = [policy('allow-all', { rules: [{ name: 'any' }] }), policy('no-admin', { action: 'DENY', rules: [{ name: 'admin', to: [{ paths: ['/admin*'] }] }] })];

describe('authz deny replies', () => {
  const deny = () => {
    const c = call({ path: '/admin' });
    const verdict = createAuthzFilter(docs, authzRuntime({ allowWhenNoPolicy: false, random: fixedRandom(0.125, 0.5) })).onRequest(c) as Verdict & { kind: 'respond' };
    return { verdict, decisionId: c.annotations.decisionId! };
  };

  it('HTTP: JSON with code, reason, decision id, rule and request id, and the id in a header', () => {
    const { verdict, decisionId } = deny();
    const { res, out } = fakeResponse();
    sendVerdict(res, verdict, { grpc: false, requestId: 'req-1' });
    expect(out.statusCode).toBe(403);
    expect(JSON.parse(out.body)).toEqual({ code: 'authz.denied', reason: 'denied by policy', decision_id: decisionId, rule: 'shop/no-admin#admin', request_id: 'req-1' });
    expect(out.headers['x-meshgate-decision-id']).toBe(decisionId);
  });

  it('gRPC: PERMISSION_DENIED with the decision id in grpc-message, so a gRPC caller can quote it', () => {
    const { verdict, decisionId } = deny();
    const { res, out } = fakeResponse();
    sendVerdict(res, verdict, { grpc: true, requestId: 'req-1' });
    expect(out.statusCode).toBe(200);
    expect(out.headers['grpc-status']).toBe('7');
    expect(decodeURIComponent(String(out.headers['grpc-message']))).toBe(`authz.denied: denied by policy (decision_id ${decisionId})`);
  });

  it('replies without a decision stay as they were', () => {
    const { res, out } = fakeResponse();
    sendVerdict(res, { kind: 'respond', code: 'route.not_found', reason: 'no route' }, { grpc: false, requestId: 'req-2' });
    expect(JSON.parse(out.body)).toEqual({ code: 'route.not_found', reason: 'no route', request_id: 'req-2' });
    expect(out.headers['x-meshgate-decision-id']).toBeUndefined();
  });
});
