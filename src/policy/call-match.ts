import { normalizePath, pathForMatching } from '../core/path-normalize.ts';

/*
 * The `match` block every per-call policy kind shares (paths and methods),
 * compiled once per snapshot. AuthorizationPolicy `to.paths`, RateLimitPolicy
 * and ValidationPolicy `match.paths` mean the same thing: a path pattern is
 * matched against the normalized request path with `;` parameters removed
 * (pathForMatching), so no encoding of a path escapes a rule written for it.
 */

/** A predicate on the path a call is matched by (see `matchPathOf`). */
export type PathTest = (matchPath: string) => boolean;

const ANY_PATH: PathTest = () => true;

/**
 * A path pattern in the form request paths are matched in (escapes of
 * unreserved characters decoded, other hex upper-cased, `;` parameters
 * removed), so `/caf%c3%a9` matches what the normalizer makes of `/caf%C3%A9`
 * and `/a;v=1` is `/a`. A pattern the normalizer would refuse (an encoded `/`)
 * is kept: no normalized request can match it.
 */
export function canonicalPathPattern(pattern: string): string {
  if (pattern === '*') return pattern;
  const normalized = normalizePath(pattern);
  return normalized.ok ? pathForMatching(normalized.path) : pattern;
}

/**
 * `*` (any), exact, prefix (one trailing `*`) or a glob whose `*` stays within
 * one segment (`/orders/*` + `/items`). Takes a canonical pattern.
 */
export function pathPatternTest(pattern: string): PathTest {
  if (pattern === '*') return ANY_PATH;
  const star = pattern.indexOf('*');
  if (star < 0) return (path) => path === pattern;
  if (star === pattern.length - 1) {
    const prefix = pattern.slice(0, -1);
    return (path) => path.startsWith(prefix);
  }
  const source = pattern
    .split('*')
    .map((part) => part.replace(/[.+?^$(){}|[\]\\]/g, '\\$&'))
    .join('[^/]*');
  const re = new RegExp(`^${source}$`);
  return (path) => re.test(path);
}

/** The path every policy matches a call by: its normalized path without `;` parameters. */
export function matchPathOf(path: string): string {
  return pathForMatching(path);
}

export interface CallMatchSpec {
  readonly paths?: readonly string[] | undefined;
  readonly methods?: readonly string[] | undefined;
}

/** Holds when one of the paths and one of the methods match; an absent list holds. Methods are upper-case. */
export type CallMatch = (method: string, matchPath: string) => boolean;

export function compileCallMatch(match: CallMatchSpec | undefined): CallMatch {
  const paths = match?.paths && match.paths.length > 0 ? match.paths.map((p) => pathPatternTest(canonicalPathPattern(p))) : undefined;
  const methods = match?.methods && match.methods.length > 0 ? new Set(match.methods.map((m) => m.toUpperCase())) : undefined;
  if (!paths && !methods) return () => true;
  return (method, matchPath) => {
    if (methods && !methods.has(method)) return false;
    if (!paths) return true;
    for (const test of paths) if (test(matchPath)) return true;
    return false;
  };
}
