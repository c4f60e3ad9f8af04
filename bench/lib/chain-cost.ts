import type { CallContext } from '../../src/core/call-context.ts';
import { systemClock } from '../../src/core/clock.ts';
import { runFilters } from '../../src/core/filter.ts';
import { buildInboundChain, createInboundRuntimes } from '../../src/inbound/inbound-chain.ts';
import type { PolicyDocument } from '../../src/policy/types.ts';
import { createPolicyValidator } from '../../src/policy/validate.ts';
import type { FiltersPolicy } from './filters-policy.ts';
import { median } from './stats.ts';
import { BENCH_WORKLOAD } from './target-meshgate-policy.ts';

/*
 * bench:filters, in process: what the inbound filter chain costs per call
 * with the bench's documents, one filter added per row in the chain's order.
 * The HTTP rows of this VM move 10-30% between runs, far more than a few
 * microseconds of filter work; this isolates the chain from the codec, the
 * sockets and the load generator.
 */

const KINDS_IN_CHAIN_ORDER = ['IPAccessPolicy', 'RequestAuthentication', 'AuthorizationPolicy', 'RateLimitPolicy', 'ValidationPolicy'] as const;

export interface ChainCostRow {
  readonly filters: string;
  /** Median µs per call over the runs. */
  readonly usPerCall: number;
}

function benchCall(policy: FiltersPolicy): CallContext {
  return {
    id: 'bench',
    direction: 'inbound',
    startedAt: 0,
    method: 'GET',
    path: '/api/items',
    query: '',
    authority: BENCH_WORKLOAD.service,
    headers: { host: BENCH_WORKLOAD.service, authorization: policy.authorization, 'user-agent': 'wrk' },
    httpVersion: '1.1',
    isGrpc: false,
    source: { address: '127.0.0.1', port: 40000, principal: undefined },
    destination: BENCH_WORKLOAD,
    annotations: { retries: 0 },
  };
}

async function timeChain(documents: readonly PolicyDocument[], policy: FiltersPolicy, calls: number): Promise<number> {
  // The sidecar's own choices: deny by default, so the rows without authorization are refusals.
  const chain = buildInboundChain(documents, { onNoPolicy: 'deny', runtimes: createInboundRuntimes({ clock: systemClock, random: Math.random, allowWhenNoAuthzPolicy: true }) });
  const started = performance.now();
  for (let i = 0; i < calls; i++) {
    const verdict = runFilters(chain, benchCall(policy));
    const settled = verdict instanceof Promise ? await verdict : verdict;
    if (settled.kind !== 'continue') throw new Error(`the bench call was refused: ${settled.code}`);
  }
  return ((performance.now() - started) * 1000) / calls;
}

/** One row per prefix of the chain: ip-access, + authn, + authz, + rate limit, + validate. */
export async function measureChainCost(policy: FiltersPolicy, opts: { readonly runs: number; readonly calls: number }): Promise<ChainCostRow[]> {
  const validator = createPolicyValidator();
  const documents = policy.documents.map((input, index) => {
    const result = validator.validate(input, { file: 'bench', index });
    if (!result.ok) throw new Error(`bench policy: ${result.errors.map((e) => `${e.field}: ${e.reason}`).join('; ')}`);
    return result.document.document;
  });
  const rows: ChainCostRow[] = [];
  for (let n = 1; n <= KINDS_IN_CHAIN_ORDER.length; n++) {
    const kinds: readonly string[] = KINDS_IN_CHAIN_ORDER.slice(0, n);
    const selected = documents.filter((d) => kinds.includes(d.kind));
    await timeChain(selected, policy, opts.calls); // warm-up: JIT, verified-token cache
    const samples: number[] = [];
    for (let r = 0; r < opts.runs; r++) samples.push(await timeChain(selected, policy, opts.calls));
    rows.push({ filters: kinds.join(' + '), usPerCall: median(samples) });
  }
  return rows;
}

export function renderChainCost(rows: readonly ChainCostRow[]): string {
  const lines = ['| inbound chain (in process, per call) | µs/call | added by the last filter |', '| --- | --: | --: |'];
  rows.forEach((row, i) => {
    const added = i === 0 ? row.usPerCall : row.usPerCall - rows[i - 1]!.usPerCall;
    lines.push(`| ${row.filters} | ${row.usPerCall.toFixed(2)} | ${added >= 0 ? '+' : ''}${added.toFixed(2)} |`);
  });
  return lines.join('\n');
}
