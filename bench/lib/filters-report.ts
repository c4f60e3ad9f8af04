import type { MeasuredRow } from './harness.ts';
import { ratio, renderRatioTable } from './ratio-report.ts';

/*
 * bench:filters table: req/s, p50 and p99 per row, each as a ratio to the
 * direct row and to the "filters off" row (same sidecar, no policy).
 */

export type FiltersRow = MeasuredRow;

const cpuColumn = {
  header: 'sidecar CPU µs/req',
  cell: (row: FiltersRow) => {
    const v = row.cpuUsPerRequest?.sidecar;
    return v === undefined ? '-' : v.toFixed(1);
  },
};

export function renderFiltersTable(rows: readonly FiltersRow[]): string {
  return renderRatioTable(rows, 'off', [cpuColumn]);
}

/**
 * What each check of your own adds per call: its row's sidecar CPU per request
 * minus the "allow-rule" row's (the same sidecar and policy without it). Rows
 * run one after another: on a shared machine the difference carries its drift.
 */
export function checksSummary(rows: readonly FiltersRow[]): string | undefined {
  const cpu = (id: string) => rows.find((r) => r.id === id && r.status === 'ok')?.cpuUsPerRequest?.sidecar;
  const base = cpu('allow-rule');
  if (base === undefined) return undefined;
  const lines = [
    ['user-check', 'a trivial check of your own'],
    ['hmac-check', 'the HMAC signature example'],
  ].flatMap(([id, what]) => {
    const v = cpu(id!);
    return v === undefined
      ? []
      : [`${what}: ${(v - base).toFixed(1)} µs of sidecar CPU per call (${v.toFixed(1)} vs ${base.toFixed(1)} µs/req with the ALLOW rule alone; rows measured one after another)`];
  });
  return lines.length === 0 ? undefined : lines.join('\n');
}

/** One line: what turning every filter on costs, from the on and off rows. */
export function filtersSummary(rows: readonly FiltersRow[]): string | undefined {
  const off = rows.find((r) => r.id === 'off' && r.status === 'ok');
  const on = rows.find((r) => r.id === 'on' && r.status === 'ok');
  if (!off || !on) return undefined;
  const usPerCall = (1_000_000 / on.rps! - 1_000_000 / off.rps!).toFixed(1);
  return `all filters on vs off: req/s ${ratio(on.rps, off.rps)}, p50 ${ratio(on.p50Ms, off.p50Ms)}, p99 ${ratio(on.p99Ms, off.p99Ms)} ` + `(${usPerCall} µs more per call at saturation, 1e6/req/s)`;
}
