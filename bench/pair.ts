import { execFileSync } from 'node:child_process';
import { existsSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chooseLoadGenerator, installExitHooks, runBench, startEchoUpstream, writeReport } from './lib/harness.ts';
import type { MeshCheckout } from './lib/mesh-parts.ts';
import { createMeshPolicy } from './lib/mesh-policy.ts';
import { createMeshTarget, withRequest } from './lib/mesh-targets.ts';
import { createProcessGroup } from './lib/processes.ts';
import { readSettings } from './lib/settings.ts';
import { median } from './lib/stats.ts';
import type { StartedTarget } from './lib/target.ts';
import { groupCpuMs } from './lib/tls-cpu.ts';

/*
 * npm run bench:pair -- <baseline> [--row mesh|mesh-all-filters] [--rounds N] [--seconds S]
 *
 * What a change does to the mesh path's CPU, measured the way a noisy shared
 * machine allows: this checkout and a baseline (a git ref, checked out into a
 * temporary worktree and bundled, or the path of another checkout with its
 * bundle built) each run one bench:mesh row side by side (their own CA,
 * policy server and two sidecars, one echo app), and wrk loads them in
 * turn, A B then B A, round after round. Per run: CPU of both sidecars from
 * /proc over the requests served. The ratio of each round (this checkout over
 * the baseline) cancels most of what the machine does meanwhile; the median of
 * the ratios is the figure to quote, with its range. bench:mesh's single runs
 * move by a fifth between minutes on the reference VM; paired rounds resolve
 * a few percent.
 */

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const RESULTS_FILE = join(ROOT, 'bench', 'results', 'pair-latest.json');
const USAGE = 'usage: npm run bench:pair -- <git ref or checkout path> [--row mesh|mesh-all-filters] [--rounds N] [--seconds S]';

interface PairArgs {
  readonly baseline: string;
  readonly row: 'mesh' | 'mesh-all-filters';
  readonly rounds: number;
  readonly seconds: number;
}

function parseArgs(argv: readonly string[]): PairArgs {
  let baseline: string | undefined;
  let row: PairArgs['row'] = 'mesh';
  let rounds = 8;
  let seconds = 4;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${arg} needs a value`);
      return next;
    };
    if (arg === '--row') {
      const r = value();
      if (r !== 'mesh' && r !== 'mesh-all-filters') throw new Error(`--row: mesh or mesh-all-filters, got ${r}`);
      row = r;
    } else if (arg === '--rounds') rounds = positive(arg, value());
    else if (arg === '--seconds') seconds = positive(arg, value());
    else if (baseline === undefined && !arg.startsWith('--')) baseline = arg;
    else throw new Error(`unknown argument ${arg}`);
  }
  if (baseline === undefined) throw new Error('a baseline is required');
  return { baseline, row, rounds, seconds };
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
  const settings = readSettings(process.env, { durationS: args.seconds, warmupS: 5, runs: args.rounds });
  const group = createProcessGroup();
  installExitHooks(group, new AbortController(), log);
  const loadgen = chooseLoadGenerator(group, settings, log);
  if (loadgen.name !== 'wrk') {
    process.stderr.write('bench:pair: needs wrk (apt-get install -y wrk): autocannon would share the CPUs it measures\n');
    return 2;
  }
  const baseline = baselineCheckout(args.baseline, group.tempDir('meshgate-bench-pair-'), log);
  try {
    const upstream = await startEchoUpstream(group, settings);
    const policy = await createMeshPolicy();
    const folder = args.row === 'mesh' ? policy.folders.mesh : policy.folders.allFilters;
    const sides: Array<{ name: string; started: StartedTarget; sidecars: number[]; usPerRequest: number[] }> = [];
    for (const [name, checkout] of [
      ['baseline', baseline.checkout],
      ['this checkout', undefined],
    ] as const) {
      const sidecars: number[] = [];
      const target = createMeshTarget({
        id: args.row,
        label: name,
        policyFiles: folder,
        startups: 1,
        log,
        ...(checkout ? { checkout } : {}),
        onStarted: async (processes) => {
          for (const p of processes) if (p.role === 'proxy') sidecars.push(p.pgid);
        },
      });
      const start = await withRequest(target, policy.request).start(upstream.context);
      if (!start.ok) throw new Error(`${name}: ${start.reason}`);
      sides.push({ name, started: start.started, sidecars, usPerRequest: [] });
    }
    const load = async (side: (typeof sides)[number], durationS: number): Promise<number> => {
      const cpu = (): number => side.sidecars.reduce((sum, pgid) => sum + (groupCpuMs(pgid) ?? Number.NaN), 0);
      const before = cpu();
      const s = side.started;
      const result = await loadgen.run({ url: s.url, headers: s.headers, method: s.method, body: s.body, durationS, connections: settings.connections });
      if (result.errors + result.non2xx > result.requests / 1000) throw new Error(`${side.name}: ${result.errors} errors and ${result.non2xx} non-2xx of ${result.requests}`);
      return ((cpu() - before) * 1000) / result.requests;
    };
    for (const side of sides) await load(side, settings.warmupS);
    const ratios: number[] = [];
    for (let round = 1; round <= args.rounds; round++) {
      // A B, then B A: neither side always runs first (or right after the other warmed the caches).
      for (const side of round % 2 === 1 ? sides : [...sides].reverse()) side.usPerRequest.push(await load(side, args.seconds));
      const [base, current] = [sides[0]!.usPerRequest.at(-1)!, sides[1]!.usPerRequest.at(-1)!];
      ratios.push(current / base);
      log(`round ${round}/${args.rounds}: baseline ${base.toFixed(1)} µs/req, this checkout ${current.toFixed(1)}, ratio ${(current / base).toFixed(3)}`);
    }
    const summary = {
      row: args.row,
      baseline: baseline.label,
      rounds: args.rounds,
      secondsPerRun: args.seconds,
      medianUsPerRequest: { baseline: median(sides[0]!.usPerRequest), thisCheckout: median(sides[1]!.usPerRequest) },
      ratio: { median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios), below1: ratios.filter((r) => r < 1).length },
      perRound: ratios.map((ratio, i) => ({ baseline: sides[0]!.usPerRequest[i], thisCheckout: sides[1]!.usPerRequest[i], ratio })),
    };
    process.stdout.write(
      `${args.row}: CPU per request of both sidecars, this checkout over ${baseline.label}: median ratio ${summary.ratio.median.toFixed(3)} ` +
        `(${summary.ratio.min.toFixed(3)}-${summary.ratio.max.toFixed(3)}, ${summary.ratio.below1} of ${args.rounds} rounds below 1); ` +
        `medians ${summary.medianUsPerRequest.baseline.toFixed(1)} -> ${summary.medianUsPerRequest.thisCheckout.toFixed(1)} µs\n`,
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
