import type { RespondVerdict } from '../core/verdict.ts';
import { respond } from '../core/verdict.ts';
import { type RetirementState, retirementAt, type SuccessorConfig } from './retirement-windows.ts';
import type { ServiceVersion, VersionTable } from './versions.ts';

/*
 * Retiring a Route version: brown-out windows (scheduled periods in which
 * calls to it get 410, so callers notice before it goes for good) and
 * `retired` (410 always). Compiled once per registry update with the version;
 * decided per call against the injected clock, never Date.now.
 */

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
