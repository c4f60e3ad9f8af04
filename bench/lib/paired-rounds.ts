import type { Log } from './harness.ts';
import type { LoadGenerator } from './load.ts';
import type { MeshCheckout } from './mesh-parts.ts';
import type { MeshRequest } from './mesh-policy.ts';
import { createMeshTarget, createOneHopTarget, withRequest } from './mesh-targets.ts';
import type { OnRowStarted } from './row-processes.ts';
import { median } from './stats.ts';
import type { StartedTarget, Target, TargetContext } from './target.ts';
import { createNginxTarget } from './target-nginx.ts';
import { createNginxMtlsPairTarget } from './target-nginx-mtls.ts';
import type { NodeRelay } from './target-node-pipes.ts';
import { createNodeHttpPairTarget, createNodeOneHopTarget, createNodePipePairTarget } from './target-node-pipes.ts';
import { groupCpuMs } from './tls-cpu.ts';

/*
 * Two targets up side by side, loaded in turn (A B, then B A) round after
 * round, CPU of each one's proxy processes from /proc over the requests it
 * served: the ratio of each round cancels most of what a shared machine does
 * meanwhile. bench:pair runs it for a change (this checkout over a baseline)
 * and for a row over its nginx counterpart; bench:mesh for its two ratio
 * targets, whose rows it otherwise measures minutes apart.
 */

export const PAIR_ROWS = ['mesh', 'mesh-all-filters', 'one-hop'] as const;
export type PairRow = (typeof PAIR_ROWS)[number];

/**
 * One side of a pair: the row run by a meshgate checkout (this one without `checkout`), its nginx
 * counterpart, or Node's floor for it (./target-node-pipes.ts: relays that check and log nothing).
 */
export type PairSideKind = { readonly kind: 'nginx' } | { readonly kind: 'meshgate'; readonly checkout?: MeshCheckout } | { readonly kind: 'node-floor'; readonly relay: NodeRelay };

export interface StartedSide {
  readonly name: string;
  readonly started: StartedTarget;
  /** Process groups whose CPU is the side's. */
  readonly proxies: readonly number[];
}

export interface PairedRounds {
  /** The sides' names: [baseline, other]. */
  readonly sides: readonly [string, string];
  readonly rounds: number;
  /** CPU µs per request of each run, per side: [baseline, other]. */
  readonly usPerRequest: readonly [readonly number[], readonly number[]];
  /** other / baseline, per round. */
  readonly ratios: readonly number[];
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

export interface PairOptions {
  readonly warmupS: number;
  readonly seconds: number;
  readonly rounds: number;
  readonly connections: number;
}

/** Starts `row` as `side` (the mesh rows' policy folder in `folder`); `repoRoot` points a one-hop sidecar at another checkout. */
export async function startSide(
  name: string,
  row: PairRow,
  side: PairSideKind,
  mesh: { readonly folder: Readonly<Record<string, string>>; readonly request: MeshRequest; readonly log: Log },
  context: TargetContext,
): Promise<StartedSide> {
  const proxies: number[] = [];
  const onStarted: OnRowStarted = async (processes) => {
    for (const p of processes) if (p.role === 'proxy') proxies.push(p.pgid);
  };
  let target: Target;
  let repoRoot: string | undefined;
  if (side.kind === 'nginx' && row === 'one-hop') target = withRequest(createNginxTarget(), mesh.request, { name: 'nginx', onStarted });
  else if (side.kind === 'nginx') target = withRequest(createNginxMtlsPairTarget(onStarted), mesh.request);
  else if (side.kind === 'node-floor' && row === 'one-hop') target = withRequest(createNodeOneHopTarget(side.relay, onStarted), mesh.request);
  else if (side.kind === 'node-floor') target = withRequest((side.relay === 'pipe' ? createNodePipePairTarget : createNodeHttpPairTarget)(onStarted), mesh.request);
  else if (row === 'one-hop') {
    target = withRequest(createOneHopTarget(onStarted, 1), mesh.request);
    repoRoot = side.checkout?.root;
  } else
    target = withRequest(
      createMeshTarget({ id: row, label: row, policyFiles: mesh.folder, startups: 1, log: mesh.log, ...(side.checkout ? { checkout: side.checkout } : {}), onStarted }),
      mesh.request,
    );
  const start = await target.start({ ...context, ...(repoRoot ? { repoRoot } : {}) });
  if (!start.ok) throw new Error(`${name}: ${start.reason}`);
  return { name, started: start.started, proxies };
}

/** Warms both sides, then runs the rounds; each round's ratio is the second side's CPU per request over the first's. */
export async function runPairedRounds(loadgen: LoadGenerator, sides: readonly [StartedSide, StartedSide], options: PairOptions, log: Log): Promise<PairedRounds> {
  const load = async (side: StartedSide, durationS: number): Promise<number> => {
    const cpu = (): number => side.proxies.reduce((sum, pgid) => sum + (groupCpuMs(pgid) ?? Number.NaN), 0);
    const before = cpu();
    const s = side.started;
    const result = await loadgen.run({ url: s.url, headers: s.headers, method: s.method, body: s.body, durationS, connections: options.connections });
    if (result.errors + result.non2xx > result.requests / 1000) throw new Error(`${side.name}: ${result.errors} errors and ${result.non2xx} non-2xx of ${result.requests}`);
    return ((cpu() - before) * 1000) / result.requests;
  };
  for (const side of sides) await load(side, options.warmupS);
  const perSide: [number[], number[]] = [[], []];
  const ratios: number[] = [];
  for (let round = 1; round <= options.rounds; round++) {
    // A B, then B A: neither side always runs first (or right after the other warmed the caches).
    for (const i of round % 2 === 1 ? [0, 1] : [1, 0]) perSide[i]!.push(await load(sides[i]!, options.seconds));
    const [base, other] = [perSide[0].at(-1)!, perSide[1].at(-1)!];
    ratios.push(other / base);
    log(`round ${round}/${options.rounds}: ${sides[0].name} ${base.toFixed(1)} µs/req, ${sides[1].name} ${other.toFixed(1)}, ratio ${(other / base).toFixed(3)}`);
  }
  return { sides: [sides[0].name, sides[1].name], rounds: options.rounds, usPerRequest: perSide, ratios, median: median(ratios), min: Math.min(...ratios), max: Math.max(...ratios) };
}
