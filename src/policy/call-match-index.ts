import type { CallMatch, CallMatchSpec } from './call-match.ts';
import { canonicalPathPattern } from './call-match.ts';
import type { PathTrie } from './path-trie.ts';
import { collectPath, createPathTrie, insertPath, pathKey } from './path-trie.ts';

/*
 * The rules of rate limiting and validation, filed by their `match` block
 * (methods, paths) as authz files its rules (src/filters/authz/authz-index.ts),
 * so a call looks only at the rules that could match it. Every matching rule
 * applies, so a lookup returns all of them, in the order they were given:
 * exactly what a scan of every rule would return
 * (test/property/call-match-index.property.test.ts checks that).
 *
 * A rule goes into the bucket of each of its methods (or the any-method
 * bucket), and inside it into the path trie when every path is exact, a
 * prefix or a glob (filed under its literal prefix), else into the residual
 * list (no paths, or `*`). A lookup gathers the candidates of the call's
 * method and of the any-method bucket and runs each one's own predicate: the
 * index only narrows, it never decides.
 */

export interface CallMatchEntry<T> {
  readonly rule: T;
  /** The rule's compiled predicate (compileCallMatch of `spec`): what decides. */
  readonly match: CallMatch;
  /** The rule's `match` block: where it is filed. */
  readonly spec: CallMatchSpec | undefined;
}

export interface CallMatchIndex<T> {
  readonly size: number;
  /** Every rule whose match holds, in the order the rules were given. Do not modify the result. */
  matching(method: string, matchPath: string): readonly T[];
}

/** Up to this many rules, trying each in order costs less than a lookup (as for authz: bench/authz-decision.ts). */
const MATCH_SCAN_UP_TO = 8;

const NONE: readonly never[] = Object.freeze([]);
const ANY_METHOD = '*';

interface Filed<T> {
  readonly ordinal: number;
  readonly rule: T;
  readonly match: CallMatch;
}

interface Bucket<T> {
  readonly trie: PathTrie<Filed<T>>;
  readonly residual: Filed<T>[];
}

/** One frozen single-rule answer per rule: a call that matches one rule (the common case) allocates nothing. */
function singlesOf<T>(entries: readonly CallMatchEntry<T>[]): readonly (readonly T[])[] {
  return entries.map((e) => Object.freeze([e.rule]));
}

function createScan<T>(entries: readonly CallMatchEntry<T>[]): CallMatchIndex<T> {
  const singles = singlesOf(entries);
  return {
    size: entries.length,
    matching(method, matchPath) {
      let first = -1;
      let found: T[] | undefined; // made only when a second rule matches
      for (let i = 0; i < entries.length; i++) {
        const entry = entries[i]!;
        if (!entry.match(method, matchPath)) continue;
        if (first < 0) first = i;
        else (found ??= [entries[first]!.rule]).push(entry.rule);
      }
      return found ?? (first < 0 ? NONE : singles[first]!);
    },
  };
}

export function createCallMatchIndex<T>(entries: readonly CallMatchEntry<T>[], scanUpTo = MATCH_SCAN_UP_TO): CallMatchIndex<T> {
  if (entries.length <= scanUpTo) return createScan(entries);
  const buckets = new Map<string, Bucket<T>>();
  const bucketOf = (method: string): Bucket<T> => {
    let bucket = buckets.get(method);
    if (!bucket) {
      bucket = { trie: createPathTrie<Filed<T>>(), residual: [] };
      buckets.set(method, bucket);
    }
    return bucket;
  };
  entries.forEach((entry, ordinal) => {
    const filed: Filed<T> = { ordinal, rule: entry.rule, match: entry.match };
    const methods = entry.spec?.methods && entry.spec.methods.length > 0 ? new Set(entry.spec.methods.map((m) => m.toUpperCase())) : [ANY_METHOD];
    const keys = entry.spec?.paths && entry.spec.paths.length > 0 ? entry.spec.paths.map((p) => pathKey(canonicalPathPattern(p))) : undefined;
    const pathKeys = keys?.every((k) => k !== undefined) ? keys.filter((k) => k !== undefined) : undefined;
    for (const method of methods) {
      const bucket = bucketOf(method);
      if (pathKeys) for (const key of pathKeys) insertPath(bucket.trie, key, filed);
      else bucket.residual.push(filed);
    }
  });
  const any = buckets.get(ANY_METHOD);
  const singles = singlesOf(entries);

  // Reused across calls: lookups are synchronous, so one call never sees another's candidates.
  const scratch: Filed<T>[][] = [];
  const collect = (bucket: Bucket<T>, matchPath: string): void => {
    collectPath(bucket.trie, matchPath, scratch);
    if (bucket.residual.length > 0) scratch.push(bucket.residual);
  };

  return {
    size: entries.length,
    matching(method, matchPath) {
      scratch.length = 0;
      const own = buckets.get(method);
      if (own) collect(own, matchPath);
      if (any) collect(any, matchPath);
      if (scratch.length === 0) return NONE;
      const candidates = scratch.length === 1 ? scratch[0]! : scratch.flat();
      scratch.length = 0;
      let found: Filed<T>[] | undefined;
      for (const filed of candidates) if (filed.match(method, matchPath)) (found ??= []).push(filed);
      if (!found) return NONE;
      if (found.length === 1) return singles[found[0]!.ordinal]!;
      // A rule filed under several of its paths may be found more than once; rule order is the ordinal's.
      if (found.length > 1) {
        found.sort((a, b) => a.ordinal - b.ordinal);
        found = found.filter((f, i) => i === 0 || f.ordinal !== found![i - 1]!.ordinal);
      }
      return found.map((f) => f.rule);
    },
  };
}
