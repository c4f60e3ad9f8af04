import { spread } from './stats.ts';
import type { TlsClientReport } from './tls-client.ts';
import type { NegotiatedTls } from './tls-connection.ts';

/** One measured run of one target: the load generator's report plus CPU accounting from the harness. */
export interface TlsRunResult extends TlsClientReport {
  /** CPU the target's process group used during the run, or undefined without /proc. */
  readonly serverCpuMs: number | undefined;
  /** serverCpuMs per completed connection, in microseconds. */
  readonly serverCpuUsPerConn: number | undefined;
  /** serverCpuMs / wall time: 1 = one core fully busy. */
  readonly serverCpuShare: number | undefined;
  readonly upstreamCpuMs: number | undefined;
  /** Share of all CPUs used by processes outside this benchmark during the run. */
  readonly othersBusyShare: number | undefined;
}

export interface TlsRowResult {
  readonly id: string;
  readonly label: string;
  readonly status: 'ok' | 'skipped' | 'failed';
  readonly reason?: string;
  readonly detail?: string;
  readonly negotiated?: NegotiatedTls;
  /** Medians over the runs. */
  readonly handshakesPerSecond?: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  readonly handshakeP50Ms?: number;
  readonly serverCpuUsPerConn?: number;
  readonly serverCpuShare?: number;
  readonly vsNginx?: number;
  readonly profiled?: boolean;
  readonly runs: readonly TlsRunResult[];
  /** Runs measured while other processes used too much CPU, then repeated. */
  readonly discardedRuns?: readonly TlsRunResult[];
}

/** Share of failed connections above which a row's figures are flagged as not comparable. */
const ERROR_SHARE_LIMIT = 0.001;

export function renderTlsTable(rows: readonly TlsRowResult[]): string {
  const header = ['target', 'handshakes/s', 'p50 ms', 'p99 ms', 'vs nginx', 'server CPU µs/conn', 'server CPU', 'notes'];
  const body = rows.map((row) => {
    if (row.status !== 'ok') return [row.label, '-', '-', '-', '-', '-', '-', `${row.status}: ${row.reason ?? ''}`];
    return [
      row.label,
      Math.round(row.handshakesPerSecond!).toLocaleString('en-US'),
      row.p50Ms!.toFixed(2),
      row.p99Ms!.toFixed(2),
      row.vsNginx === undefined ? 'n/a' : `${row.vsNginx.toFixed(2)}x`,
      row.serverCpuUsPerConn === undefined ? 'n/a' : Math.round(row.serverCpuUsPerConn).toLocaleString('en-US'),
      row.serverCpuShare === undefined ? 'n/a' : `${Math.round(row.serverCpuShare * 100)}%`,
      notes(row),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((cells) => cells[i]!.length)));
  const numeric = new Set([1, 2, 3, 4, 5, 6]);
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (numeric.has(i) ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`;
  return [line(header), rule, ...body.map(line)].join('\n');
}

function notes(row: TlsRowResult): string {
  const parts: string[] = [];
  if (row.runs.length > 1) parts.push(`spread ${(spread(row.runs.map((r) => r.perSecond)) * 100).toFixed(1)}% over ${row.runs.length} runs`);
  const discarded = row.discardedRuns?.length ?? 0;
  if (discarded > 0) parts.push(`${discarded} busy-machine run${discarded > 1 ? 's' : ''} repeated`);
  if (row.handshakeP50Ms !== undefined) parts.push(`handshake p50 ${row.handshakeP50Ms.toFixed(2)} ms`);
  if (row.negotiated) parts.push(`${row.negotiated.protocol} ${row.negotiated.group}`);
  const completed = row.runs.reduce((sum, r) => sum + r.completed, 0);
  const failed = row.runs.reduce((sum, r) => sum + r.errors + r.non200, 0);
  const reused = row.runs.reduce((sum, r) => sum + r.reused, 0);
  if (failed > 0)
    parts.push(
      `${failed} failed connections (${row.runs
        .flatMap((r) => r.errorSamples)
        .slice(0, 2)
        .join(', ')})`,
    );
  if (reused > 0) parts.push(`NOT COMPARABLE: ${reused} resumed sessions`);
  if (completed + failed > 0 && failed / (completed + failed) > ERROR_SHARE_LIMIT) parts.push('NOT COMPARABLE: failed connections');
  if (row.profiled) parts.push('CPU-profiled (slower)');
  return parts.join('; ');
}
