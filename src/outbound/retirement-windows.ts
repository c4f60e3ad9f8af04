import { parsePolicyDate } from './deprecation-headers.ts';

/*
 * When a Route version is retired or browned out, as data: compiled once per
 * registry update with the version (versions.ts), asked per call against the
 * injected clock (version-retirement.ts turns the answer into a 410).
 */

/** A scheduled brown-out, as a Route document gives it: ISO 8601 dates, a bare date is midnight UTC. */
interface BrownoutConfig {
  readonly start: string;
  readonly end: string;
}

/** Where callers of a retired version should go: another version of the same Route, a URL, or both. */
export interface SuccessorConfig {
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
