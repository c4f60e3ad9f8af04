import { describe, expect, it } from 'vitest';
import { createDestinationCache, destinationOf } from '../../../src/outbound/destination.ts';

describe('the service an outbound call is for', () => {
  it('is read from every form Kubernetes DNS gives a service, with or without a port', () => {
    expect(destinationOf('orders')).toEqual({ name: 'orders', namespace: undefined });
    expect(destinationOf('Orders.Shop:8080')).toEqual({ name: 'orders', namespace: 'shop' });
    expect(destinationOf('orders.shop.svc')).toEqual({ name: 'orders', namespace: 'shop' });
    expect(destinationOf('orders.shop.svc.cluster.local.')).toEqual({ name: 'orders', namespace: 'shop' });
    expect(destinationOf('api.example.com')).toEqual({ name: 'api.example.com', namespace: undefined });
    expect(destinationOf('[::1]:80')).toEqual({ name: '[::1]', namespace: undefined });
  });

  it('gives the same answers when kept, also after more authorities than it keeps', () => {
    const cached = createDestinationCache();
    const authorities = ['orders', 'Orders.Shop:8080', 'orders.shop.svc.cluster.local', '[::1]:80'];
    for (let i = 0; i < 600; i++) authorities.push(`svc-${i}.ns-${i % 7}:${8000 + (i % 3)}`);
    for (let round = 0; round < 2; round++) {
      for (const authority of authorities) expect(cached(authority)).toEqual(destinationOf(authority));
    }
    expect(cached('orders')).toBe(cached('orders')); // kept: no new object per call
  });
});
