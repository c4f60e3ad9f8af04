/** A bounded map that forgets the least recently used entry first. */
export interface LruCache<V> {
  get(key: string): V | undefined;
  set(key: string, value: V): void;
  delete(key: string): void;
  readonly size: number;
}

/**
 * LRU on a Map: insertion order is recency order, so a hit moves its entry to
 * the end and eviction takes the first key. O(1) per operation.
 */
export function createLruCache<V>(maxEntries: number): LruCache<V> {
  if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError(`LRU size must be a positive integer, got ${maxEntries}`);
  const entries = new Map<string, V>();
  // The key moved to the end last: asked for again (one caller's token, call after call) it is the most
  // recently used already, so it stays put instead of a delete and a re-insert, which leave the Map a
  // hole and, every few calls, a rehash of all its entries (see local-buckets.ts).
  let last: string | undefined;
  return {
    get(key) {
      const value = entries.get(key);
      if (value === undefined || key === last) return value;
      entries.delete(key);
      entries.set(key, value);
      last = key;
      return value;
    },
    set(key, value) {
      entries.delete(key);
      entries.set(key, value);
      last = key;
      if (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
    },
    delete(key) {
      entries.delete(key);
      if (key === last) last = undefined;
    },
    get size() {
      return entries.size;
    },
  };
}
