import type { LoadResult } from './load.ts';
import { spread } from './stats.ts';

export interface RowResult {
  readonly id: string;
  readonly label: string;
  readonly status: 'ok' | 'skipped' | 'failed';
  /** Why the row has no figures (skipped/failed). */
  readonly reason?: string;
  /** Medians of the measured runs. */
  readonly rps?: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  readonly rpsVsDirect?: number;
  readonly runs: readonly LoadResult[];
  /** CPU microseconds per request of the target's process group (all its processes: nginx's workers, a sidecar's), Linux only. */
  readonly cpuUsPerRequest?: Readonly<Record<string, number>>;
}

/** Share of failed responses above which a row's figures are flagged as not comparable. */
const ERROR_SHARE_LIMIT = 0.001;

export function renderTable(rows: readonly RowResult[]): string {
  const header = ['target', 'req/s', 'p50 ms', 'p99 ms', 'req/s vs direct', 'CPU µs/req', 'notes'];
  const body = rows.map((row) => {
    if (row.status !== 'ok') return [row.label, '-', '-', '-', '-', '-', `${row.status}: ${row.reason ?? ''}`];
    const cpu = row.cpuUsPerRequest?.['proxy'];
    return [
      row.label,
      Math.round(row.rps!).toLocaleString('en-US'),
      row.p50Ms!.toFixed(2),
      row.p99Ms!.toFixed(2),
      row.rpsVsDirect === undefined ? 'n/a' : `${row.rpsVsDirect.toFixed(2)}x`,
      cpu === undefined ? 'n/a' : cpu.toFixed(0),
      notes(row),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)));
  const numeric = new Set([1, 2, 3, 4, 5]);
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (numeric.has(i) ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`;
  return [line(header), rule, ...body.map(line)].join('\n');
}

function notes(row: RowResult): string {
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
