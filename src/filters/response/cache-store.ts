import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Clock } from '../../core/clock.ts';
import { varyValues } from './cache-policy.ts';

/*
 * The inbound response cache's memory: entries under a primary key
 * (caller identity when the route caches authenticated calls, authority,
 * path and query), one variant per set of request values of the response's
 * Vary headers. Bounded in bytes for the whole sidecar, least recently used
 * entries evicted first (a Map keeps insertion order: a hit moves its entry
 * to the end). Lives on the runtime, so it outlives policy snapshots.
 */

export interface CachedResponse {
  readonly status: number;
  /** The app's headers as relayed (hop-by-hop removed, Age removed), before per-call changes. */
  readonly headers: OutgoingHttpHeaders;
  readonly body: Buffer;
  /** Clock.now() when stored. */
  readonly storedAt: number;
  /** Age it had when stored (RFC 9111 §4.2.3 corrected initial age). */
  readonly initialAgeMs: number;
  readonly lifetimeMs: number;
}

interface Entry {
  readonly primary: string;
  readonly variant: string;
  readonly response: CachedResponse;
  readonly bytes: number;
}

interface Primary {
  /** Vary names of the response stored last for this key; older variants keyed by other names age out. */
  vary: readonly string[];
  readonly variants: Map<string, Entry>;
}

interface CacheLookup {
  readonly response: CachedResponse;
  /** Current age in whole seconds, for the Age header. */
  readonly ageSeconds: number;
}

export interface ResponseCacheStore {
  /** A fresh entry for the request, or undefined (a stale one is dropped). */
  get(primary: string, request: IncomingHttpHeaders): CacheLookup | undefined;
  /** Stores (replacing the same variant); false when it cannot fit at all. */
  put(primary: string, vary: readonly string[], request: IncomingHttpHeaders, response: CachedResponse): boolean;
  readonly bytes: () => number;
  readonly entries: () => number;
}

/** Rough cost of an entry besides its body: keys, header text, objects. */
const ENTRY_OVERHEAD = 256;

export function createResponseCacheStore(opts: { readonly maxBytes: number; readonly clock: Clock; readonly onEvict?: () => void }): ResponseCacheStore {
  const primaries = new Map<string, Primary>();
  /** Every entry, least recently used first. */
  const lru = new Map<Entry, true>();
  let bytes = 0;

  const remove = (entry: Entry): void => {
    lru.delete(entry);
    bytes -= entry.bytes;
    const primary = primaries.get(entry.primary);
    if (primary?.variants.get(entry.variant) === entry) {
      primary.variants.delete(entry.variant);
      if (primary.variants.size === 0) primaries.delete(entry.primary);
    }
  };

  return {
    get(key, request) {
      const primary = primaries.get(key);
      if (!primary) return undefined;
      const entry = primary.variants.get(varyValues(primary.vary, request));
      if (!entry) return undefined;
      const ageMs = entry.response.initialAgeMs + Math.max(0, opts.clock.now() - entry.response.storedAt);
      if (ageMs >= entry.response.lifetimeMs) {
        remove(entry);
        return undefined;
      }
      lru.delete(entry);
      lru.set(entry, true);
      return { response: entry.response, ageSeconds: Math.floor(ageMs / 1000) };
    },
    put(key, vary, request, response) {
      const size = entrySize(key, response);
      if (size > opts.maxBytes) return false;
      let primary = primaries.get(key);
      if (!primary) {
        primary = { vary, variants: new Map() };
        primaries.set(key, primary);
      } else if (!sameNames(primary.vary, vary)) {
        // The resource now varies on other headers: the variants kept under the old names no longer apply.
        for (const old of [...primary.variants.values()]) remove(old);
        primary = { vary, variants: new Map() };
        primaries.set(key, primary);
      }
      const variant = varyValues(vary, request);
      const previous = primary.variants.get(variant);
      if (previous) remove(previous);
      const entry: Entry = { primary: key, variant, response, bytes: size };
      // remove() may have dropped an emptied primary: put it back before adding.
      if (!primaries.has(key)) primaries.set(key, primary);
      primary.variants.set(variant, entry);
      lru.set(entry, true);
      bytes += size;
      for (const oldest of lru.keys()) {
        if (bytes <= opts.maxBytes) break;
        remove(oldest);
        opts.onEvict?.();
      }
      return true;
    },
    bytes: () => bytes,
    entries: () => lru.size,
  };
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((name, i) => name === b[i]);
}

function entrySize(key: string, response: CachedResponse): number {
  let size = ENTRY_OVERHEAD + key.length * 2 + response.body.length;
  for (const [name, value] of Object.entries(response.headers)) size += name.length + (Array.isArray(value) ? value.join(', ').length : String(value).length);
  return size;
}
