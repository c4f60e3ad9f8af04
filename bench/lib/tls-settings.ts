/*
 * BENCH_* variables of `npm run bench:tls` (the only place it reads the
 * environment). Same names and forms as bench/lib/settings.ts where they mean
 * the same thing; the defaults differ (fewer connections: every one is a full
 * handshake).
 */

export type TlsKeyType = 'ecdsa-p256' | 'rsa-2048';

const TLS_TARGET_IDS = ['nginx', 'meshgate-inbound'] as const;

export interface TlsBenchSettings {
  /** Measured seconds per run. */
  readonly durationS: number;
  /** Unmeasured seconds of load per target before its first run; 0 = none. */
  readonly warmupS: number;
  /** Concurrent connect-request-close loops in the load generator. */
  readonly connections: number;
  /** Runs per target; the table shows medians. */
  readonly runs: number;
  /** Key type of the CA, the sidecar, nginx and the client certificate. */
  readonly keyType: TlsKeyType;
  /** Key-exchange groups the client offers (OpenSSL list), or undefined for Node's default. */
  readonly groups: string | undefined;
  /** Target ids to run, or undefined for all. */
  readonly targets: readonly string[] | undefined;
  /** How long a target has to become ready. */
  readonly startTimeoutMs: number;
  /** How often a run is repeated when other processes used over 10% of the CPUs during it. */
  readonly busyRetries: number;
  /** Write a V8 CPU profile of the sidecar and print where its time went. */
  readonly profile: boolean;
  /** One extra run per target under `perf record`, broken down by component. */
  readonly perf: boolean;
}

/*
 * Default groups: X25519 then P-256. Node 24 (OpenSSL 3.5) would otherwise
 * offer the hybrid X25519MLKEM768 first, which a Node server accepts and
 * Debian's nginx (OpenSSL 3.0) does not know: the two rows would then do
 * different key exchanges. BENCH_TLS_GROUPS=auto restores Node's default.
 */
const DEFAULT_GROUPS = 'X25519:P-256';

export const TLS_SETTINGS_HELP = `Environment:
  BENCH_DURATION       measured seconds per run                      (default 8)
  BENCH_WARMUP         warm-up seconds per target, 0 = none          (default 2)
  BENCH_CONNECTIONS    concurrent connect-request-close loops        (default 16)
  BENCH_RUNS           runs per target; the median is shown          (default 3)
  BENCH_KEY_TYPE       ecdsa-p256 | rsa-2048, for every key          (default ecdsa-p256)
  BENCH_TLS_GROUPS     key-exchange groups the client offers, or auto (default ${DEFAULT_GROUPS})
  BENCH_TARGETS        comma list of ${TLS_TARGET_IDS.join(', ')}      (default: both)
  BENCH_START_TIMEOUT  seconds a target has to become ready          (default 15)
  BENCH_BUSY_RETRIES   repeats of a run during which other processes
                       used over 10% of the CPUs, 0 = keep every run  (default 2)
  BENCH_TLS_PROFILE    1 = V8 CPU profile of the sidecar, summarised (default off)
  BENCH_TLS_PERF       1 = one extra run per target under perf record,
                       CPU per connection by component (OpenSSL,
                       JS/V8, kernel, ...)                           (default off)`;

export function readTlsSettings(env: NodeJS.ProcessEnv): TlsBenchSettings {
  const keyType = env['BENCH_KEY_TYPE']?.trim() || 'ecdsa-p256';
  if (keyType !== 'ecdsa-p256' && keyType !== 'rsa-2048') {
    throw new Error(`BENCH_KEY_TYPE: expected ecdsa-p256 or rsa-2048, got ${JSON.stringify(keyType)}`);
  }
  const groupsRaw = env['BENCH_TLS_GROUPS']?.trim() || DEFAULT_GROUPS;
  if (!/^[A-Za-z0-9:_-]+$/.test(groupsRaw)) throw new Error(`BENCH_TLS_GROUPS: expected a list like X25519:P-256, got ${JSON.stringify(groupsRaw)}`);
  const targets = env['BENCH_TARGETS']
    ?.split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
  const unknown = (targets ?? []).filter((t) => !(TLS_TARGET_IDS as readonly string[]).includes(t));
  if (unknown.length > 0) throw new Error(`BENCH_TARGETS: unknown ${unknown.join(', ')} (known: ${TLS_TARGET_IDS.join(', ')})`);
  const flag = (name: string): boolean => {
    const raw = env[name]?.trim() ?? '';
    return raw !== '' && raw !== '0' && raw !== 'false';
  };
  return {
    durationS: seconds(env, 'BENCH_DURATION', 8, 1),
    warmupS: seconds(env, 'BENCH_WARMUP', 2, 0),
    connections: integer(env, 'BENCH_CONNECTIONS', 16, 1),
    runs: integer(env, 'BENCH_RUNS', 3, 1),
    keyType,
    groups: groupsRaw === 'auto' ? undefined : groupsRaw,
    targets: targets && targets.length > 0 ? targets : undefined,
    startTimeoutMs: seconds(env, 'BENCH_START_TIMEOUT', 15, 1) * 1000,
    busyRetries: integer(env, 'BENCH_BUSY_RETRIES', 2, 0),
    profile: flag('BENCH_TLS_PROFILE'),
    perf: flag('BENCH_TLS_PERF'),
  };
}

/** Whole seconds, written `8` or `8s`. */
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
