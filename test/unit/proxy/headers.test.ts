import { describe, expect, it } from 'vitest';
import { upstreamRequestHeaders } from '../../../src/proxy/headers.ts';

/*
 * What the app is sent of a caller's headers. The names a sidecar must not
 * pass on (the caller's XFCC, the credential authn strips) are left out while
 * copying; everything else the caller sent arrives.
 */

const FACTS = { clientAddress: '10.0.0.7', proto: 'http' as const, requestId: 'req-1', authority: 'orders' };

describe('upstreamRequestHeaders', () => {
  it("leaves out the names in both omit lists and keeps the caller's other headers", () => {
    const out = upstreamRequestHeaders(
      { host: 'orders', 'x-forwarded-client-cert': 'By=forged', authorization: 'Bearer t', 'x-jwt-claims': 'forged', accept: 'text/plain', connection: 'keep-alive' },
      FACTS,
      new Set(['x-forwarded-client-cert']),
      ['authorization', 'x-jwt-claims'],
    );
    expect(out['x-forwarded-client-cert']).toBeUndefined();
    expect(out.authorization).toBeUndefined();
    expect(out['x-jwt-claims']).toBeUndefined();
    expect(out.connection).toBeUndefined();
    expect(out.accept).toBe('text/plain');
    expect(out['x-request-id']).toBe('req-1');
  });
});
