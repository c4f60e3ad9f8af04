import { execFileSync } from 'node:child_process';
import { existsSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chooseLoadGenerator, installExitHooks, runBench, startEchoUpstream, writeReport } from './lib/harness.ts';
import type { MeshCheckout } from './lib/mesh-parts.ts';
import { createMeshPolicy } from './lib/mesh-policy.ts';
import { NGINX_RATIO_LIMITS } from './lib/mesh-report.ts';
import type { PairRow, PairSideKind } from './lib/paired-rounds.ts';
import { PAIR_ROWS, runPairedRounds, startSide } from './lib/paired-rounds.ts';
import { createProcessGroup } from './lib/processes.ts';
import { readSettings } from './lib/settings.ts';
import { median } from './lib/stats.ts';
import type { NodeRelay } from './lib/target-node-pipes.ts';
import { NODE_RELAYS } from './lib/target-node-pipes.ts';

/*
 * npm run bench:pair -- <baseline> [--row mesh|mesh-all-filters|one-hop] [--floor pipe|http] [--rounds N] [--seconds S] [--warmup S]
 *
 * What a change does to the mesh path's CPU, measured the way a noisy shared
 * machine allows: this checkout and a baseline (a git ref, checked out into a
 * temporary worktree and bundled, or the path of another checkout with its
 * bundle built) each run one bench:mesh row side by side (their own CA,
 * policy server and two sidecars; one sidecar for the one hop; one echo app), and wrk loads them in
 * turn, A B then B A, round after round. Per run: CPU of the proxies from
 * /proc over the requests served. The ratio of each round (this checkout over
 * the baseline) cancels most of what the machine does meanwhile; the median of
 * the ratios is the figure to quote, with its range. bench:mesh's single runs
 * move by a fifth between minutes on the reference VM; paired rounds resolve
 * a few percent.
 *
 * The baseline `nginx` pairs a row with its nginx counterpart the same way
 * (the mesh rows with two nginx over mTLS, the one hop with one nginx):
 * issue #13's "at most 3x the nginx pair" and "at most 1.7x nginx" as a
 * median of paired rounds, where bench:mesh measures the two rows minutes
 * apart and its ratio moves with whatever else the machine did in between.
 *
 * `--floor pipe|http` runs Node's floor for the row in place of this
 * checkout (bench/lib/target-node-pipes.ts: byte pipes, or relays that parse
 * and rewrite each message, checking and logging nothing): against `nginx`,
 * how far from nginx Node itself is before meshgate does any work, which is
 * what the ratio targets leave for that work.
 */

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const RESULTS_FILE = join(ROOT, 'bench', 'results', 'pair-latest.json');
const USAGE = 'usage: npm run bench:pair -- <git ref, checkout path or nginx> [--row mesh|mesh-all-filters|one-hop] [--floor pipe|http] [--rounds N] [--seconds S] [--warmup S]';
/** The baseline that is not a meshgate checkout: the row's nginx counterpart. */
const NGINX = 'nginx';

interface PairArgs {
  readonly baseline: string;
  readonly row: PairRow;
  /** Node's floor relay in place of this checkout. */
  readonly floor: NodeRelay | undefined;
  readonly rounds: number;
  readonly seconds: number;
  /** Load before the rounds, each side: 5 s when both sides are meshgate (they tier up alike), 15 s against nginx (bench:mesh's, V8's steady state). */
  readonly warmupS: number;
}

function parseArgs(argv: readonly string[]): PairArgs {
  let baseline: string | undefined;
  let row: PairArgs['row'] = 'mesh';
  let floor: NodeRelay | undefined;
  let rounds = 8;
  let seconds = 4;
  let warmupS: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${arg} needs a value`);
      return next;
    };
    if (arg === '--row') {
      const r = value();
      const known = PAIR_ROWS.find((name) => name === r);
      if (known === undefined) throw new Error(`--row: ${PAIR_ROWS.join(', ')}; got ${r}`);
      row = known;
    } else if (arg === '--floor') {
      const f = value();
      floor = NODE_RELAYS.find((name) => name === f);
      if (floor === undefined) throw new Error(`--floor: ${NODE_RELAYS.join(', ')}; got ${f}`);
    } else if (arg === '--rounds') rounds = positive(arg, value());
    else if (arg === '--seconds') seconds = positive(arg, value());
    else if (arg === '--warmup') warmupS = positive(arg, value());
    else if (baseline === undefined && !arg.startsWith('--')) baseline = arg;
    else throw new Error(`unknown argument ${arg}`);
  }
  if (baseline === undefined) throw new Error('a baseline is required');
  return { baseline, row, floor, rounds, seconds, warmupS: warmupS ?? (baseline === NGINX ? 15 : 5) };
}

function positive(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: a whole number of at least 1, got ${text}`);
  return n;
}

/** The baseline's checkout: a path as it is, or a git ref checked out and bundled in `scratch`. */
function baselineCheckout(baseline: string, scratch: string, log: (line: string) => void): { checkout: MeshCheckout; label: string; remove: () => void } {
  if (existsSync(join(baseline, 'bin', 'meshgate.js'))) {
    if (!existsSync(join(baseline, 'dist', 'meshgate', 'main.js'))) throw new Error(`${baseline}: no bundle (run npm run build there first)`);
    return { checkout: { root: baseline }, label: baseline, remove: () => {} };
  }
  const git = (...args: string[]): string => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
  const commit = git('rev-parse', '--verify', `${baseline}^{commit}`);
  const dir = join(scratch, 'baseline');
  git('worktree', 'add', '--detach', dir, commit);
  const remove = (): void => {
    try {
      git('worktree', 'remove', '--force', dir);
    } catch {
      rmSync(dir, { recursive: true, force: true });
      git('worktree', 'prune');
    }
  };
  try {
    // Same dependencies as this checkout: the comparison is of meshgate's code.
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    log(`baseline ${baseline} (${commit.slice(0, 10)}): bundling`);
    execFileSync(process.execPath, [join(dir, 'scripts', 'build.ts')], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  } catch (err) {
    remove();
    throw err;
  }
  return { checkout: { root: dir }, label: `${baseline} (${commit.slice(0, 10)})`, remove };
}

async function main(): Promise<number> {
  let args: PairArgs;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench:pair: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const log = (line: string): void => void process.stderr.write(`[bench:pair] ${line}\n`);
  const settings = readSettings(process.env, { durationS: args.seconds, warmupS: args.warmupS, runs: args.rounds });
  const group = createProcessGroup();
  installExitHooks(group, new AbortController(), log);
  const loadgen = chooseLoadGenerator(group, settings, log);
  if (loadgen.name !== 'wrk') {
    process.stderr.write('bench:pair: needs wrk (apt-get install -y wrk): autocannon would share the CPUs it measures\n');
    return 2;
  }
  const baseline =
    args.baseline === NGINX
      ? { side: { kind: 'nginx' } as PairSideKind, label: args.row === 'one-hop' ? 'nginx (1 worker)' : 'two nginx over mTLS (1 worker each)', remove: () => {} }
      : (() => {
          const made = baselineCheckout(args.baseline, group.tempDir('meshgate-bench-pair-'), log);
          return { side: { kind: 'meshgate', checkout: made.checkout } as PairSideKind, label: made.label, remove: made.remove };
        })();
  try {
    const upstream = await startEchoUpstream(group, settings);
    const policy = await createMeshPolicy();
    const folder = args.row === 'mesh' ? policy.folders.mesh : policy.folders.allFilters;
    const mesh = { folder, request: policy.request, log };
    const other: { side: PairSideKind; name: string } = args.floor
      ? { side: { kind: 'node-floor', relay: args.floor }, name: `Node's floor (${args.floor})` }
      : { side: { kind: 'meshgate' }, name: 'this checkout' };
    const sides = [await startSide('baseline', args.row, baseline.side, mesh, upstream.context), await startSide(other.name, args.row, other.side, mesh, upstream.context)] as const;
    const paired = await runPairedRounds(loadgen, sides, { warmupS: settings.warmupS, seconds: args.seconds, rounds: args.rounds, connections: settings.connections }, log);
    const limit = args.baseline === NGINX ? NGINX_RATIO_LIMITS[args.row] : undefined;
    const summary = {
      row: args.row,
      measuredSide: other.name,
      baseline: baseline.label,
      rounds: args.rounds,
      secondsPerRun: args.seconds,
      medianUsPerRequest: { baseline: median(paired.usPerRequest[0]), measured: median(paired.usPerRequest[1]) },
      ratio: { median: paired.median, min: paired.min, max: paired.max, below1: paired.ratios.filter((r) => r < 1).length },
      perRound: paired.ratios.map((ratio, i) => ({ baseline: paired.usPerRequest[0][i], measured: paired.usPerRequest[1][i], ratio })),
    };
    process.stdout.write(
      `${args.row}: CPU per request of the row's proxies, ${other.name} over ${baseline.label}: median ratio ${summary.ratio.median.toFixed(3)} ` +
        `(${summary.ratio.min.toFixed(3)}-${summary.ratio.max.toFixed(3)}, ${summary.ratio.below1} of ${args.rounds} rounds below 1); ` +
        `medians ${summary.medianUsPerRequest.baseline.toFixed(1)} -> ${summary.medianUsPerRequest.measured.toFixed(1)} µs` +
        (limit === undefined
          ? '\n'
          : args.floor
            ? `; issue #13 allows meshgate ${limit}x, ${(limit / summary.ratio.median).toFixed(2)}x this floor\n`
            : `; issue #13: at most ${limit}x, ${summary.ratio.median <= limit ? 'met' : 'MISSED'}\n`),
    );
    writeReport(RESULTS_FILE, { generatedAt: new Date().toISOString(), ...summary }, log);
    for (const side of sides) await side.started.stop();
    await upstream.stop();
    return 0;
  } finally {
    await group.stopAll();
    baseline.remove();
  }
}

runBench('bench:pair', main);
