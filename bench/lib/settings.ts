/*
 * Benchmark settings, read from the environment once here; every other module
 * receives the parsed values.
 */

type LoadGeneratorName = 'wrk' | 'autocannon';

export interface BenchSettings {
  /** Measured seconds per run. */
  readonly durationS: number;
  /** Unmeasured seconds of load before the first run of each target. */
  readonly warmupS: number;
  readonly connections: number;
  /** Measured runs per target; the report shows the median of each figure. */
  readonly runs: number;
  /** Forced load generator, or undefined to prefer wrk and fall back to autocannon. */
  readonly loadGenerator: LoadGeneratorName | undefined;
  /** Target ids to run (in the built-in order), or undefined for all. */
  readonly targets: readonly string[] | undefined;
  /** How long a proxy under test has to become ready. */
  readonly startTimeoutMs: number;
  /** Worker processes of the meshgate-inbound-workers row. */
  readonly workers: number;
}

export const SETTINGS_HELP = `Environment:
  BENCH_DURATION       measured seconds per run              (default 8)
  BENCH_WARMUP         warm-up seconds per target, 0 = none  (default 2)
  BENCH_CONNECTIONS    concurrent keep-alive connections     (default 50)
  BENCH_RUNS           runs per target; the median is shown  (default 3)
  BENCH_LOADGEN        wrk | autocannon                      (default: wrk if installed)
  BENCH_TARGETS        comma list of target ids              (default: all)
  BENCH_START_TIMEOUT  seconds a proxy has to become ready   (default 15)
  BENCH_WORKERS        workers of meshgate-inbound-workers   (default 2)`;

/** Defaults an entry may change (bench:mesh's full and --quick modes); a BENCH_* variable still wins. */
type Defaults = Pick<BenchSettings, 'durationS' | 'warmupS' | 'runs'>;

export function readSettings(env: NodeJS.ProcessEnv, defaults: Defaults = { durationS: 8, warmupS: 2, runs: 3 }): BenchSettings {
  const loadGenerator = env['BENCH_LOADGEN']?.trim() || undefined;
  if (loadGenerator !== undefined && loadGenerator !== 'wrk' && loadGenerator !== 'autocannon') {
    throw new Error(`BENCH_LOADGEN: expected wrk or autocannon, got ${JSON.stringify(loadGenerator)}`);
  }
  const targets = env['BENCH_TARGETS']
    ?.split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
  return {
    durationS: seconds(env, 'BENCH_DURATION', defaults.durationS, 1),
    warmupS: seconds(env, 'BENCH_WARMUP', defaults.warmupS, 0),
    connections: integer(env, 'BENCH_CONNECTIONS', 50, 1),
    runs: integer(env, 'BENCH_RUNS', defaults.runs, 1),
    loadGenerator,
    targets: targets && targets.length > 0 ? targets : undefined,
    startTimeoutMs: seconds(env, 'BENCH_START_TIMEOUT', 15, 1) * 1000,
    workers: integer(env, 'BENCH_WORKERS', 2, 2),
  };
}

/** Whole seconds, written `8` or `8s` (wrk takes whole seconds). */
function seconds(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const match = /^(\d+)s?$/.exec(raw);
  const value = match ? Number(match[1]) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new Error(`${name}: expected whole seconds >= ${min} (e.g. 8 or 8s), got ${JSON.stringify(raw)}`);
  }
  return value;
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const value = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new Error(`${name}: expected an integer >= ${min}, got ${JSON.stringify(raw)}`);
  }
  return value;
}
