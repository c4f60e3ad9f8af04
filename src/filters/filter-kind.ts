import type { Clock, Random } from '../core/clock.ts';
import type { Filter } from '../core/filter.ts';
import type { PolicyDocument } from '../policy/types.ts';

/*
 * The one shape of a per-call filter. Each filter module exports a kind and a
 * `create...Runtime(deps)`:
 * - the runtime is what outlives policy snapshots (caches, buckets, the ban
 *   list, metrics, logger, decision ids), created once per sidecar;
 * - `compile` runs once per snapshot and returns the per-call Filter, which
 *   holds only what it compiled from the documents.
 */

/** What every filter runtime is made from: time and randomness are always injected (STYLE.md #7), never defaulted. */
export interface FilterDeps {
  readonly clock: Clock;
  readonly random: Random;
}

export interface FilterKind<Runtime> {
  /** The Filter's name (explain's stages and the chain's observers key on it). */
  readonly name: string;
  compile(documents: readonly PolicyDocument[], runtime: Runtime): Filter;
}
