import type { IncomingHttpHeaders } from 'node:http';
import type { DeprecationConfig, DeprecationHeaders } from './deprecation-headers.ts';
import { deprecationHeaders, parsePolicyDate } from './deprecation-headers.ts';
import type { Retirement, RetirementConfig } from './retirement-windows.ts';
import { compileRetirement } from './retirement-windows.ts';

/** The request header a calling app pins a version with. Forwarded as sent: the destination app may want to know. */
const VERSION_HEADER = 'x-meshgate-version';

/** One named version of a destination, as a Route document's `versions` gives it. */
export interface VersionConfig extends RetirementConfig {
  readonly name: string;
  readonly subset: Readonly<Record<string, string>>;
  readonly deprecated?: DeprecationConfig | undefined;
}

interface Deprecation {
  readonly sunsetMs: number;
  readonly message: string;
  readonly headers: DeprecationHeaders;
}

export interface ServiceVersion {
  readonly name: string;
  readonly subset: Readonly<Record<string, string>>;
  readonly deprecation: Deprecation | undefined;
  /** Brown-out windows and `retired` (./version-retirement.ts); undefined when it has neither. */
  readonly retirement: Retirement | undefined;
}

/** A destination's versions, compiled once per registry update. */
export interface VersionTable {
  byName(name: string): ServiceVersion | undefined;
  /**
   * The deprecated version an endpoint with these labels belongs to, if any:
   * `preferred` when the endpoint is in its subset (the version the caller
   * pinned), else the first deprecated version, in document order, whose
   * subset the labels contain.
   */
  deprecatedVersionOf(labels: Readonly<Record<string, string>>, preferred?: ServiceVersion): ServiceVersion | undefined;
  /**
   * The version an endpoint with these labels answered for: `preferred` (the
   * pinned one, whose subset the endpoint is in), else the version
   * deprecatedVersionOf names, so the log agrees with the deprecation headers,
   * else the first version, in document order, whose subset the labels contain.
   */
  versionOf(labels: Readonly<Record<string, string>>, preferred?: ServiceVersion): ServiceVersion | undefined;
  /** False when no version is deprecated: the stack then skips the per-call check. */
  readonly anyDeprecated: boolean;
  /**
   * The versions a route backend's subset lies within (its endpoints are all
   * in each version's subset) that are retired or have a brown-out window, in
   * document order. None for a backend without a subset.
   */
  retiringVersionsOf(subset: Readonly<Record<string, string>> | undefined): readonly ServiceVersion[];
  /** False when no version is retired or has a brown-out window: the stack then skips that check. */
  readonly anyRetiring: boolean;
}

function contains(labels: Readonly<Record<string, string>>, subset: Readonly<Record<string, string>>): boolean {
  for (const key in subset) if (labels[key] !== subset[key]) return false;
  return true;
}

export function compileVersions(configs: readonly VersionConfig[]): VersionTable {
  const byName = new Map<string, ServiceVersion>();
  const all: ServiceVersion[] = [];
  const deprecated: ServiceVersion[] = [];
  const retiring: ServiceVersion[] = [];
  for (const config of configs) {
    const version: ServiceVersion = {
      name: config.name,
      subset: Object.freeze({ ...config.subset }),
      deprecation: config.deprecated ? { sunsetMs: parsePolicyDate(config.deprecated.sunset), message: config.deprecated.message, headers: deprecationHeaders(config.deprecated) } : undefined,
      retirement: compileRetirement(config),
    };
    byName.set(version.name, version);
    all.push(version);
    if (version.deprecation) deprecated.push(version);
    if (version.retirement) retiring.push(version);
  }
  // Endpoint labels are frozen per endpoint (./endpoint.ts) and replaced, never mutated, so the
  // object is a sound cache key; the table and its cache are dropped at the next registry update.
  const cache = new WeakMap<object, ServiceVersion | null>();
  const anyCache = new WeakMap<object, ServiceVersion | null>();
  const deprecatedVersionOf = (labels: Readonly<Record<string, string>>, preferred?: ServiceVersion): ServiceVersion | undefined => {
    if (preferred?.deprecation) return preferred; // the pinned endpoint is in its subset by construction
    let found = cache.get(labels);
    if (found === undefined) {
      found = deprecated.find((v) => contains(labels, v.subset)) ?? null;
      cache.set(labels, found);
    }
    return found ?? undefined;
  };
  return {
    byName: (name) => byName.get(name),
    anyDeprecated: deprecated.length > 0,
    deprecatedVersionOf,
    anyRetiring: retiring.length > 0,
    // A route's subsets are few and fixed per update: a scan, no cache.
    retiringVersionsOf: (subset) => (subset === undefined ? [] : retiring.filter((v) => contains(subset, v.subset))),
    versionOf(labels, preferred) {
      if (preferred) return preferred;
      let found = anyCache.get(labels);
      if (found === undefined) {
        found = deprecatedVersionOf(labels) ?? all.find((v) => contains(labels, v.subset)) ?? null;
        anyCache.set(labels, found);
      }
      return found ?? undefined;
    },
  };
}

/**
 * The version name a call pins, or undefined when it pins none. A repeated
 * header reaches us joined (or as a list) and so names no version.
 */
export function pinnedVersion(headers: IncomingHttpHeaders): string | undefined {
  const value = headers[VERSION_HEADER];
  if (value === undefined) return undefined;
  return Array.isArray(value) ? value.join(', ') : value;
}
