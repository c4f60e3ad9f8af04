import { BENCH_WORKLOAD } from './target-meshgate-policy.ts';

/*
 * bench:ratelimit documents: RateLimitPolicy rules whose limit the bench never
 * reaches (1 000 000 requests per second, burst 1 000 000: the schema's
 * ceiling), so every call is counted and admitted and the figures are the
 * cost of counting, not of refusing.
 */

const NEVER_REACHED = { limit: { requests: 1_000_000, per: '1s' }, burst: 1_000_000 } as const;

export interface RateLimitBenchRules {
  readonly name: string;
  readonly scope: 'local' | 'global';
  /** Rule count; every rule matches the calls of the bench (rules r0, r1, ...). */
  readonly rules: number;
  /** The `key` of every rule, e.g. ['source.principal']. */
  readonly key: readonly string[];
  /** The `match` of every rule; omitted: every call. */
  readonly match?: { readonly methods?: readonly string[]; readonly paths?: readonly string[] };
  /** Global rules only; default deny. */
  readonly failureMode?: 'deny' | 'allow';
}

/** One RateLimitPolicy selecting the bench workload, in input form (validate it with src/policy). */
export function rateLimitDocument(spec: RateLimitBenchRules): Record<string, unknown> {
  return {
    apiVersion: 'meshgate.dev/v1',
    kind: 'RateLimitPolicy',
    metadata: { name: spec.name, namespace: BENCH_WORKLOAD.namespace },
    spec: {
      selector: { services: [BENCH_WORKLOAD.service] },
      rules: Array.from({ length: spec.rules }, (_, i) => ({
        name: `r${i}`,
        ...(spec.match ? { match: spec.match } : {}),
        key: spec.key,
        ...NEVER_REACHED,
        scope: spec.scope,
        // deny: Redis slower than rateLimit.redis.timeout shows up as 503s in the table, never as a fast row.
        ...(spec.scope === 'global' ? { failureMode: spec.failureMode ?? 'deny' } : {}),
      })),
    },
  };
}
