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

  it('an entry asked for again and again stays the most recently used; the least recently used goes', () => {
    const c = createLruCache<number>(3);
    c.set('a', 1);
    c.set('b', 2);
    c.set('c', 3);
    for (let i = 0; i < 3; i++) expect(c.get('a')).toBe(1); // order of use: b, c, a
    c.set('d', 4); // b goes
    expect([c.get('b'), c.get('c'), c.get('a'), c.get('d')]).toEqual([undefined, 3, 1, 4]);
    c.delete('d');
    expect(c.get('c')).toBe(3); // order: a, c
    c.set('e', 5);
    c.set('f', 6); // a goes
    expect([c.get('a'), c.get('c'), c.get('e'), c.get('f')]).toEqual([undefined, 3, 5, 6]);
  });

  it('refuses a size that is not a positive integer', () => {
    expect(() => createLruCache(0)).toThrow(RangeError);
  });
});
