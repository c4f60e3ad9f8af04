import type { MeasuredRow } from './harness.ts';
import { ratio, renderRatioTable } from './ratio-report.ts';

/*
 * bench:filters table: req/s, p50 and p99 per row, each as a ratio to the
 * direct row and to the "filters off" row (same sidecar, no policy).
 */

export type FiltersRow = MeasuredRow;

export function renderFiltersTable(rows: readonly FiltersRow[]): string {
  return renderRatioTable(rows, 'off');
}

/** One line: what turning every filter on costs, from the on and off rows. */
export function filtersSummary(rows: readonly FiltersRow[]): string | undefined {
  const off = rows.find((r) => r.id === 'off' && r.status === 'ok');
  const on = rows.find((r) => r.id === 'on' && r.status === 'ok');
  if (!off || !on) return undefined;
  const usPerCall = (1_000_000 / on.rps! - 1_000_000 / off.rps!).toFixed(1);
  return `all filters on vs off: req/s ${ratio(on.rps, off.rps)}, p50 ${ratio(on.p50Ms, off.p50Ms)}, p99 ${ratio(on.p99Ms, off.p99Ms)} ` + `(${usPerCall} µs more per call at saturation, 1e6/req/s)`;
}
