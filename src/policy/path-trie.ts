/*
 * Path patterns filed by their literal part, so that a call looks at the few
 * rules whose paths could match it instead of scanning them all
 * (ARCHITECTURE.md: no filter scans every rule on the hot path). Shared by the
 * authz index and the call-match index of rate limiting and validation. The
 * trie only narrows: what it returns is checked with the rule's own predicate.
 */

/** An exact path or a path prefix the trie can look up; globs are filed under their literal prefix. */
export type PathKey = { readonly exact: string } | { readonly prefix: string };

/** The key of a canonical path pattern (call-match.ts); undefined for `*`, which the trie cannot narrow. */
export function pathKey(pattern: string): PathKey | undefined {
  if (pattern === '*') return undefined;
  const star = pattern.indexOf('*');
  if (star < 0) return { exact: pattern };
  return { prefix: pattern.slice(0, star) };
}

/**
 * A trie of path segments. A node stands for the path up to a `/`; `exact`
 * holds the items of paths ending there, `prefixes` those whose prefix
 * continues with a partial segment (`/admin*` files `admin` at the root,
 * `/orders/*` files `` at `orders`).
 */
export interface PathTrie<T> {
  children: Map<string, PathTrie<T>> | undefined;
  exact: T[] | undefined;
  prefixes: Map<string, T[]> | undefined;
  longestPrefix: number;
}

export function createPathTrie<T>(): PathTrie<T> {
  return { children: undefined, exact: undefined, prefixes: undefined, longestPrefix: 0 };
}

function childOf<T>(node: PathTrie<T>, segment: string): PathTrie<T> {
  node.children ??= new Map();
  let child = node.children.get(segment);
  if (!child) {
    child = createPathTrie();
    node.children.set(segment, child);
  }
  return child;
}

export function insertPath<T>(root: PathTrie<T>, key: PathKey, item: T): void {
  if ('exact' in key) {
    let node = root;
    for (const segment of key.exact.slice(1).split('/')) node = childOf(node, segment);
    (node.exact ??= []).push(item);
    return;
  }
  const lastSlash = key.prefix.lastIndexOf('/');
  let node = root;
  if (lastSlash > 0) for (const segment of key.prefix.slice(1, lastSlash).split('/')) node = childOf(node, segment);
  const rest = key.prefix.slice(lastSlash + 1);
  node.prefixes ??= new Map();
  let list = node.prefixes.get(rest);
  if (!list) {
    list = [];
    node.prefixes.set(rest, list);
  }
  list.push(item);
  node.longestPrefix = Math.max(node.longestPrefix, rest.length);
}

/** Pushes onto `out` every list of items whose key could match `path`. */
export function collectPath<T>(root: PathTrie<T>, path: string, out: T[][]): void {
  if (path.charCodeAt(0) !== 47 /* / */) return; // `OPTIONS *`
  let node: PathTrie<T> | undefined = root;
  let start = 1;
  while (node) {
    const end = path.indexOf('/', start);
    const segment = end < 0 ? path.slice(start) : path.slice(start, end);
    const prefixes = node.prefixes;
    if (prefixes) {
      // Whichever is fewer: the prefixes filed here, or the prefixes of this segment.
      if (prefixes.size <= segment.length + 1) {
        for (const [prefix, items] of prefixes) if (segment.startsWith(prefix)) out.push(items);
      } else {
        const longest = Math.min(segment.length, node.longestPrefix);
        for (let n = 0; n <= longest; n++) {
          const items = prefixes.get(segment.slice(0, n));
          if (items) out.push(items);
        }
      }
    }
    node = node.children?.get(segment);
    if (end < 0) {
      if (node?.exact) out.push(node.exact);
      return;
    }
    start = end + 1;
  }
}
