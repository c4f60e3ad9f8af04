import type { LoadResult } from './load.ts';
import { spread } from './stats.ts';

/*
 * bench:filters table: req/s, p50 and p99 per row, each as a ratio to the
 * direct row and to the "filters off" row (same sidecar, no policy).
 */

export interface FiltersRow {
  readonly id: string;
  readonly label: string;
  readonly status: 'ok' | 'skipped' | 'failed';
  readonly reason?: string;
  readonly rps?: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  readonly runs: readonly LoadResult[];
}

/** Share of failed responses above which a row's figures are flagged as not comparable. */
const ERROR_SHARE_LIMIT = 0.001;

const ratio = (value: number | undefined, base: number | undefined): string =>
  value === undefined || base === undefined || base === 0 ? 'n/a' : `${(value / base).toFixed(2)}x`;

export function renderFiltersTable(rows: readonly FiltersRow[]): string {
  const direct = rows.find((r) => r.id === 'direct' && r.status === 'ok');
  const off = rows.find((r) => r.id === 'off' && r.status === 'ok');
  const header = ['target', 'req/s', 'p50 ms', 'p99 ms', 'req/s vs direct', 'p50 vs direct', 'p99 vs direct', 'req/s vs off', 'p50 vs off', 'p99 vs off', 'notes'];
  const body = rows.map((r) => {
    if (r.status !== 'ok') return [r.label, '-', '-', '-', '-', '-', '-', '-', '-', '-', `${r.status}: ${r.reason ?? ''}`];
    const vsOff = r.id !== 'direct';
    return [
      r.label,
      Math.round(r.rps!).toLocaleString('en-US'),
      r.p50Ms!.toFixed(2),
      r.p99Ms!.toFixed(2),
      ratio(r.rps, direct?.rps),
      ratio(r.p50Ms, direct?.p50Ms),
      ratio(r.p99Ms, direct?.p99Ms),
      vsOff ? ratio(r.rps, off?.rps) : '-',
      vsOff ? ratio(r.p50Ms, off?.p50Ms) : '-',
      vsOff ? ratio(r.p99Ms, off?.p99Ms) : '-',
      notes(r),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)));
  const numeric = (i: number) => i > 0 && i < header.length - 1;
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (numeric(i) ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`;
  return [line(header), rule, ...body.map(line)].join('\n');
}

/** One line: what turning every filter on costs, from the on and off rows. */
export function filtersSummary(rows: readonly FiltersRow[]): string | undefined {
  const off = rows.find((r) => r.id === 'off' && r.status === 'ok');
  const on = rows.find((r) => r.id === 'on' && r.status === 'ok');
  if (!off || !on) return undefined;
  const usPerCall = (1_000_000 / on.rps! - 1_000_000 / off.rps!).toFixed(1);
  return (
    `all filters on vs off: req/s ${ratio(on.rps, off.rps)}, p50 ${ratio(on.p50Ms, off.p50Ms)}, p99 ${ratio(on.p99Ms, off.p99Ms)} ` +
    `(${usPerCall} µs more per call at saturation, 1e6/req/s)`
  );
}

function notes(row: FiltersRow): string {
  const parts: string[] = [];
  if (row.runs.length > 1) parts.push(`req/s spread ${(spread(row.runs.map((r) => r.rps)) * 100).toFixed(1)}% over ${row.runs.length} runs`);
  const requests = row.runs.reduce((sum, r) => sum + r.requests, 0);
  const errors = row.runs.reduce((sum, r) => sum + r.errors, 0);
  const non2xx = row.runs.reduce((sum, r) => sum + r.non2xx, 0);
  if (errors > 0) parts.push(`${errors} socket errors`);
  if (non2xx > 0) parts.push(`${non2xx} non-2xx`);
  if (requests > 0 && (errors + non2xx) / requests > ERROR_SHARE_LIMIT) parts.push('NOT COMPARABLE: failed responses');
  return parts.join('; ');
}
