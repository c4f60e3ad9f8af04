import type { CallContext } from '../../src/core/call-context.ts';

/**
 * A call as the inbound listener hands it to the filters: GET /orders/1 to
 * orders (namespace shop) over HTTP/1.1, from 10.0.0.5 without a peer
 * principal; `over` replaces whole fields.
 */
export function callContext(over: Partial<CallContext> = {}): CallContext {
  return {
    id: 'req-1',
    direction: 'inbound',
    startedAt: 0,
    method: 'GET',
    path: '/orders/1',
    query: '',
    authority: 'orders',
    headers: {},
    httpVersion: '1.1',
    isGrpc: false,
    source: { address: '10.0.0.5', port: 1234, principal: undefined },
    destination: { service: 'orders', namespace: 'shop' },
    annotations: { retries: 0 },
    ...over,
  };
}
