import { spawnSync } from 'node:child_process';

/*
 * BENCH_TLS_PERF=1: after the measured runs, one extra run per target with
 * `perf record` attached to its processes (not counted in the table: perf
 * slows the target), then every sample is put in a component by the shared
 * object and symbol it landed in. Multiplied by that run's server CPU per
 * connection, this says where each server spends a handshake, in the same
 * buckets for nginx and for the sidecar: OpenSSL (libcrypto/libssl for
 * nginx; statically linked into the node binary for meshgate), V8 and JIT
 * code, Node's C++ and libuv, the kernel (TCP, syscalls), libc.
 *
 * Unlike the V8 CPU profile (BENCH_TLS_PROFILE), perf sees native work done in
 * I/O callbacks with no JavaScript on the stack: Node does most of the TLS
 * handshake there, and the V8 profiler counts that time as idle.
 */

const PERF_COMPONENTS = [
  'OpenSSL (handshake crypto, X.509, records)',
  'JavaScript and V8 (JIT code, builtins, GC, compiler)',
  'Node C++ bindings and libuv',
  'kernel (TCP over loopback, syscalls)',
  'libc malloc/free, memcpy',
  'libc locks (pthread_rwlock)',
  'libc other',
  'nginx',
  'other',
] as const;

type PerfComponent = (typeof PERF_COMPONENTS)[number];

export interface PerfBreakdown {
  readonly samples: number;
  /** Share of samples per component. */
  readonly shares: Readonly<Partial<Record<PerfComponent, number>>>;
  /** Top symbols by share, for the JSON. */
  readonly topSymbols: readonly { readonly symbol: string; readonly dso: string; readonly share: number }[];
}

/** C libraries other than OpenSSL that the node binary links statically. */
const NODE_C_DEPENDENCY = /^(uv_|uv__|llhttp|nghttp2|nghttp3|ngtcp2|ares_|sqlite3|uvwasi|Brotli|brotli|deflate|inflate|crc32|adler32|zlib|simdutf|napi_|node_)/;

function componentOf(dso: string, symbol: string, isKernel: boolean): PerfComponent {
  if (isKernel || dso.startsWith('[kernel')) return 'kernel (TCP over loopback, syscalls)';
  if (/^lib(crypto|ssl)\.so/.test(dso)) return 'OpenSSL (handshake crypto, X.509, records)';
  if (dso.startsWith('[JIT]') || /^perf-\d+\.map$/.test(dso)) return 'JavaScript and V8 (JIT code, builtins, GC, compiler)';
  if (/^libc\.so/.test(dso) || /^libc-/.test(dso)) {
    if (/pthread_rwlock|pthread_mutex|futex|lll_lock/.test(symbol)) return 'libc locks (pthread_rwlock)';
    if (/malloc|free|_int_|chunk|consolidate|tcache|realloc|calloc|memmove|memcpy|memset|memcmp/.test(symbol)) return 'libc malloc/free, memcpy';
    return 'libc other';
  }
  if (dso === 'nginx') return 'nginx';
  if (dso === 'node') {
    if (/^Builtins_|v8::|cppgc::|heap::base|^V8|^Turboshaft|^RegExp/.test(symbol)) return 'JavaScript and V8 (JIT code, builtins, GC, compiler)';
    if (symbol.includes('::') || NODE_C_DEPENDENCY.test(symbol)) return 'Node C++ bindings and libuv';
    if (/^0x[0-9a-f]+$/.test(symbol)) return 'other';
    // The remaining plain C symbols of the node binary are OpenSSL's (statically linked).
    return 'OpenSSL (handshake crypto, X.509, records)';
  }
  if (/^libstdc\+\+|^libgcc/.test(dso)) return 'Node C++ bindings and libuv';
  return 'other';
}

/** Arguments of `perf record` sampling `pids` for `seconds`. */
export function perfRecordArgs(pids: readonly number[], seconds: number, file: string): string[] {
  // Self time only (no call graphs): cheap, and enough to put each sample in a component.
  return ['record', '-F', '999', '-p', pids.join(','), '-o', file, '--', 'sleep', String(seconds)];
}

/** Reads a perf.data file into components; undefined when perf report fails or saw nothing. */
export function perfBreakdown(binary: string, file: string): PerfBreakdown | undefined {
  const out = spawnSync(binary, ['report', '-i', file, '--no-children', '--sort', 'dso,sym', '--stdio', '-g', 'none', '--percent-limit', '0'], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: 60_000,
  });
  if (out.status !== 0) return undefined;
  // "# Samples: 12K of event 'cpu-clock:pppH'"
  const count = /# Samples: ([\d.]+)([KM]?)/.exec(out.stdout);
  const samples = count ? Math.round(Number(count[1]) * (count[2] === 'K' ? 1e3 : count[2] === 'M' ? 1e6 : 1)) : 0;
  const shares: Partial<Record<PerfComponent, number>> = {};
  const top: { symbol: string; dso: string; share: number }[] = [];
  let total = 0;
  for (const line of out.stdout.split('\n')) {
    // "    2.86%  node                 [.] __ecp_nistz256_mul_montx"
    const m = /^\s+([\d.]+)%\s+(.+?)\s+\[([.k])\]\s+(.*)$/.exec(line);
    if (!m) continue;
    const share = Number(m[1]) / 100;
    const dso = m[2]!.trim();
    const symbol = m[4]!.trim();
    const component = componentOf(dso, symbol, m[3] === 'k');
    shares[component] = (shares[component] ?? 0) + share;
    total += share;
    if (top.length < 25) top.push({ symbol: symbol.slice(0, 160), dso, share });
  }
  if (total === 0) return undefined;
  // perf's percentages may not add up to exactly 100: normalise.
  for (const key of Object.keys(shares) as PerfComponent[]) shares[key] = shares[key]! / total;
  return { samples, shares, topSymbols: top };
}

export interface PerfColumn {
  readonly label: string;
  /** Server CPU per connection in the perf run, µs. */
  readonly cpuUsPerConn: number | undefined;
  readonly breakdown: PerfBreakdown | undefined;
}

/** A table: component | µs/conn (share) per target. */
export function renderPerf(columns: readonly PerfColumn[]): string {
  const header = ['component', ...columns.map((c) => `${c.label} µs/conn`)];
  const used = PERF_COMPONENTS.filter((component) => columns.some((c) => (c.breakdown?.shares[component] ?? 0) >= 0.005));
  const cell = (c: PerfColumn, component: PerfComponent): string => {
    const share = c.breakdown?.shares[component];
    if (share === undefined || c.cpuUsPerConn === undefined) return share === undefined ? '-' : `${(share * 100).toFixed(0)}%`;
    return `${Math.round(share * c.cpuUsPerConn)} (${(share * 100).toFixed(0)}%)`;
  };
  const rows = used.map((component) => [component, ...columns.map((c) => cell(c, component))]);
  rows.push(['total (server CPU per connection in the perf run)', ...columns.map((c) => (c.cpuUsPerConn === undefined ? 'n/a' : String(Math.round(c.cpuUsPerConn))))]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (i === 0 ? '-'.repeat(w) : `${'-'.repeat(w - 1)}:`)).join(' | ')} |`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}
