import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../../src/core/call-context.ts';
import { callViewOf } from '../../../src/filters/user-filter/call-view.ts';
import { createRouteHeaderCache, formatRouteHeader, parseRouteHeader, ROUTE_HEADER } from '../../../src/proxy/route-header.ts';

describe('the route a caller sidecar names (x-meshgate-route)', () => {
  it('carries the route name and the version labels across, whatever characters they hold', () => {
    const value = formatRouteHeader('orders api;v2', { version: 'v2', 'team/name': 'a=b c' });
    expect(value).not.toMatch(/[ ]/);
    expect(parseRouteHeader(value)).toEqual({ name: 'orders api;v2', labels: { version: 'v2', 'team/name': 'a=b c' } });
    expect(parseRouteHeader(formatRouteHeader('orders#default', undefined))).toEqual({ name: 'orders#default', labels: {} });
  });

  it('is the same value when kept per route and subset, and a new route (a new policy) gets its own', () => {
    const routeHeaderOf = createRouteHeaderCache();
    const v1 = { version: 'v1' };
    const v2 = { version: 'v2', team: 'a=b c' };
    const route = { name: 'orders api' };
    for (let i = 0; i < 2; i++) {
      expect(routeHeaderOf(route, undefined)).toBe(formatRouteHeader('orders api', undefined));
      expect(routeHeaderOf(route, v1)).toBe(formatRouteHeader('orders api', v1));
      expect(routeHeaderOf(route, v2)).toBe(formatRouteHeader('orders api', v2));
    }
    expect(routeHeaderOf({ name: 'orders-next' }, v1)).toBe(formatRouteHeader('orders-next', v1));
    expect(routeHeaderOf({ name: 'orders-next' }, undefined)).toBe('orders-next');
  });

  it('takes nothing from a value that is repeated, empty, too long, malformed or badly encoded', () => {
    for (const bad of [undefined, '', ['a', 'b'], 'x'.repeat(3000), 'route;novalue', 'route;=v', '%E0%A4%A', `r${';k=v'.repeat(40)}`, ';k=v']) {
      expect(parseRouteHeader(bad)).toBeUndefined();
    }
    expect(parseRouteHeader('r;__proto__=x')?.labels).toEqual({ ['__proto__']: 'x' });
  });

  it("is the check's call.route only for a caller with a verified mesh identity, and never among its headers", () => {
    const call = (principal: string | undefined): CallContext => ({
      id: 'r',
      direction: 'inbound',
      startedAt: 0,
      method: 'GET',
      path: '/',
      query: '',
      authority: 'orders',
      headers: { host: 'orders', [ROUTE_HEADER]: 'orders-api;version=v2' },
      httpVersion: '1.1',
      isGrpc: false,
      source: { address: '10.0.0.1', port: 1, principal },
      destination: { service: 'orders', namespace: 'shop' },
      annotations: { retries: 0 },
    });
    const peer = callViewOf(call('spiffe://cluster.local/ns/shop/sa/frontend'));
    expect(peer.route).toEqual({ name: 'orders-api', labels: { version: 'v2' } });
    expect(peer.headers).toEqual({ host: 'orders' });
    expect(callViewOf(call(undefined)).route).toBeNull();
  });
});
