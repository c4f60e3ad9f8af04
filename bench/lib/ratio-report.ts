import type { MeasuredRow } from './harness.ts';
import { spread } from './stats.ts';

/*
 * A req/s, p50, p99 table where every figure is also a ratio to the direct
 * row and to one baseline row of the same run (bench:filters: the sidecar
 * with filters off; bench:ratelimit: the sidecar with no rate-limit policy).
 */

/** Share of failed responses above which a row's figures are flagged as not comparable. */
const ERROR_SHARE_LIMIT = 0.001;

export const ratio = (value: number | undefined, base: number | undefined): string => (value === undefined || base === undefined || base === 0 ? 'n/a' : `${(value / base).toFixed(2)}x`);

export interface ExtraColumn {
  readonly header: string;
  /** Cell of an ok row; '-' when it has nothing to show. */
  readonly cell: (row: MeasuredRow) => string;
}

export function renderRatioTable(rows: readonly MeasuredRow[], baselineId: string, extra: readonly ExtraColumn[] = []): string {
  const direct = rows.find((r) => r.id === 'direct' && r.status === 'ok');
  const baseline = rows.find((r) => r.id === baselineId && r.status === 'ok');
  const vs = `vs ${baselineId}`;
  const header = ['target', 'req/s', 'p50 ms', 'p99 ms', 'req/s vs direct', 'p50 vs direct', 'p99 vs direct', `req/s ${vs}`, `p50 ${vs}`, `p99 ${vs}`, ...extra.map((c) => c.header), 'notes'];
  const body = rows.map((r) => {
    if (r.status !== 'ok') return [r.label, ...header.slice(1, -1).map(() => '-'), `${r.status}: ${r.reason ?? ''}`];
    const vsBaseline = r.id !== 'direct';
    return [
      r.label,
      Math.round(r.rps!).toLocaleString('en-US'),
      r.p50Ms!.toFixed(2),
      r.p99Ms!.toFixed(2),
      ratio(r.rps, direct?.rps),
      ratio(r.p50Ms, direct?.p50Ms),
      ratio(r.p99Ms, direct?.p99Ms),
      vsBaseline ? ratio(r.rps, baseline?.rps) : '-',
      vsBaseline ? ratio(r.p50Ms, baseline?.p50Ms) : '-',
      vsBaseline ? ratio(r.p99Ms, baseline?.p99Ms) : '-',
      ...extra.map((c) => c.cell(r)),
      notes(r),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)));
  const numeric = (i: number) => i > 0 && i < header.length - 1;
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (numeric(i) ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`;
  return [line(header), rule, ...body.map(line)].join('\n');
}

function notes(row: MeasuredRow): string {
  const parts: string[] = [];
  if (row.runs.length > 1) parts.push(`req/s spread ${(spread(row.runs.map((r) => r.rps)) * 100).toFixed(1)}% over ${row.runs.length} runs`);
  const requests = row.runs.reduce((sum, r) => sum + r.requests, 0);
  const errors = row.runs.reduce((sum, r) => sum + r.errors, 0);
  const non2xx = row.runs.reduce((sum, r) => sum + r.non2xx, 0);
  if (errors > 0) parts.push(`${errors} socket errors`);
  if (non2xx > 0) parts.push(`${non2xx} non-2xx`);
  if (requests > 0 && (errors + non2xx) / requests > ERROR_SHARE_LIMIT) parts.push('NOT COMPARABLE: failed responses');
  parts.push(...(row.notes ?? []));
  return parts.join('; ');
}
