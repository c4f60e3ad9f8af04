import { describe, expect, it } from 'vitest';
import { createLruCache } from '../../../../src/filters/authn/lru-cache.ts';

describe('LRU cache', () => {
  it('drops the least recently used entry past its size', () => {
    const c = createLruCache<number>(2);
    c.set('a', 1);
    c.set('b', 2);
    expect(c.get('a')).toBe(1);
    c.set('c', 3);
    expect([c.get('a'), c.get('b'), c.get('c'), c.size]).toEqual([1, undefined, 3, 2]);
    c.set('a', 10);
    c.set('d', 4);
    expect([c.get('a'), c.get('c'), c.get('d')]).toEqual([10, undefined, 4]);
    c.delete('a');
    expect(c.size).toBe(1);
  });

  it('refuses a size that is not a positive integer', () => {
    expect(() => createLruCache(0)).toThrow(RangeError);
  });
});
