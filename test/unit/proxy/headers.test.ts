import { describe, expect, it } from 'vitest';
import { downstreamResponseHeaders, upstreamRequestHeaders } from '../../../src/proxy/headers.ts';

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

  it('drops what Connection names, whichever way it is written, and nothing else', () => {
    const sent = { 'keep-alive': 'timeout=5', close: 'a field named close', 'x-hop': 'h', 'x-end': 'e' };
    const cases: [string, string[]][] = [
      ['keep-alive', ['keep-alive']],
      ['Keep-Alive', ['keep-alive']],
      ['close', ['keep-alive', 'close']],
      ['CLOSE', ['keep-alive', 'close']],
      ['keep-alive, x-hop', ['keep-alive', 'x-hop']],
      [' close ,X-Hop', ['keep-alive', 'close', 'x-hop']],
    ];
    for (const [connection, dropped] of cases) {
      for (const out of [upstreamRequestHeaders({ ...sent, connection }, FACTS), downstreamResponseHeaders({ ...sent, connection })] as Record<string, unknown>[]) {
        const kept = Object.keys(sent).filter((name) => out[name] !== undefined);
        expect(kept, connection).toEqual(Object.keys(sent).filter((name) => !dropped.includes(name)));
        expect(out.connection).toBeUndefined();
      }
    }
  });
});
