import type { RespondVerdict } from '../core/verdict.ts';
import { respond } from '../core/verdict.ts';
import { parsePolicyDate } from './deprecation-headers.ts';
import type { ServiceVersion, VersionTable } from './versions.ts';

/*
 * Retiring a Route version: brown-out windows (scheduled periods in which
 * calls to it get 410, so callers notice before it goes for good) and
 * `retired` (410 always). Compiled once per registry update with the version;
 * decided per call against the injected clock, never Date.now.
 */

/** A scheduled brown-out, as a Route document gives it: ISO 8601 dates, a bare date is midnight UTC. */
interface BrownoutConfig {
  readonly start: string;
  readonly end: string;
}

/** Where callers of a retired version should go: another version of the same Route, a URL, or both. */
interface SuccessorConfig {
  readonly version?: string | undefined;
  readonly link?: string | undefined;
}

export interface RetirementConfig {
  readonly brownouts?: readonly BrownoutConfig[] | undefined;
  readonly retired?: boolean | undefined;
  readonly successor?: SuccessorConfig | undefined;
}

export interface Retirement {
  readonly retired: boolean;
  /** [start, end) in epoch milliseconds, sorted by start. */
  readonly windows: readonly { readonly startMs: number; readonly endMs: number }[];
  readonly successor: SuccessorConfig | undefined;
}

/** What a version answers at one instant: open (undefined), browned out until `endMs`, or retired. */
export type RetirementState = { readonly kind: 'retired' } | { readonly kind: 'brownout'; readonly endMs: number };

/** Undefined when the version is neither retired nor has a brown-out: the per-call check is skipped. */
export function compileRetirement(config: RetirementConfig): Retirement | undefined {
  const windows = (config.brownouts ?? []).map((w) => ({ startMs: parsePolicyDate(w.start), endMs: parsePolicyDate(w.end) })).sort((a, b) => a.startMs - b.startMs);
  if (!config.retired && windows.length === 0) return undefined;
  return { retired: config.retired === true, windows, successor: config.successor };
}

export function retirementAt(retirement: Retirement, nowMs: number): RetirementState | undefined {
  if (retirement.retired) return { kind: 'retired' };
  // Overlapping windows may be written: the one that ends last among those in force says when calls work again.
  let endMs: number | undefined;
  for (const w of retirement.windows) {
    if (w.startMs > nowMs) break; // sorted by start: none later is in force
    if (nowMs < w.endMs) endMs = Math.max(endMs ?? 0, w.endMs);
  }
  return endMs === undefined ? undefined : { kind: 'brownout', endMs };
}

/**
 * The 410 for a call that resolves to `version` at `nowMs`, or undefined when
 * the version answers. The reply points at the successor (the body's reason,
 * and a `Link: <...>; rel="successor-version"` when the Route gives a URL) and
 * keeps the Sunset and Deprecation headers a deprecated version announces.
 */
export function retirementVerdict(destination: string, version: ServiceVersion, nowMs: number): RespondVerdict | undefined {
  const retirement = version.retirement;
  if (!retirement) return undefined;
  const state = retirementAt(retirement, nowMs);
  if (!state) return undefined;
  const what =
    state.kind === 'retired'
      ? `version ${version.name} of ${destination} is retired`
      : `version ${version.name} of ${destination} is browned out until ${new Date(state.endMs).toISOString()} before it is retired`;
  const headers: Record<string, string> = {};
  const successor = retirement.successor;
  if (successor?.link !== undefined) headers.link = `<${successor.link}>; rel="successor-version"`;
  const deprecation = version.deprecation;
  if (deprecation) {
    headers.sunset = deprecation.headers.sunset;
    headers.deprecation = deprecation.headers.deprecation;
  }
  const code = state.kind === 'retired' ? 'route.version_retired' : 'route.version_brownout';
  return respond(code, `${what}: ${successorHint(successor)}`, { headers });
}

function successorHint(successor: SuccessorConfig | undefined): string {
  const hints: string[] = [];
  if (successor?.version !== undefined) hints.push(`use version ${successor.version} (x-meshgate-version: ${successor.version})`);
  if (successor?.link !== undefined) hints.push(`see ${successor.link}`);
  return hints.length > 0 ? hints.join('; ') : 'no successor is named';
}

/**
 * The 410 for a call, with the version that refused it: the pinned version,
 * else (un-pinned) the first version, in document order, that the route
 * backend's subset lies within and that refuses at `nowMs`. A backend without
 * a subset resolves to no version.
 */
export function callRetirement(
  destination: string,
  versions: VersionTable,
  pinned: ServiceVersion | undefined,
  subset: Readonly<Record<string, string>> | undefined,
  nowMs: number,
): { readonly version: ServiceVersion; readonly verdict: RespondVerdict } | undefined {
  for (const version of pinned ? [pinned] : versions.retiringVersionsOf(subset)) {
    const verdict = retirementVerdict(destination, version, nowMs);
    if (verdict) return { version, verdict };
  }
  return undefined;
}
