import { probe } from './http-probe.ts';
import { rateLimitDocument } from './ratelimit-policy.ts';
import type { StartedTarget, Target } from './target.ts';
import { BENCH_WORKLOAD, startMeshgateWithPolicy } from './target-meshgate-policy.ts';
import { createNginxTarget } from './target-nginx.ts';

/*
 * bench:ratelimit rows. The three sidecar rows boot from a snapshot (no policy
 * server; lib/target-meshgate-policy.ts) with `authorization.allowWhenNoPolicy`,
 * so authz admits the load without a document of its own and the rows differ
 * only by the RateLimitPolicy:
 *
 *  - sidecar: no RateLimitPolicy (the baseline of the "vs sidecar" ratios);
 *  - local:   one local rule keyed by source.ip, never reached;
 *  - global:  the same rule with scope: global, counted in the bench's
 *             redis-server (rateLimit.redis.url; default timeout 50 ms,
 *             failureMode deny, so a Redis that cannot keep up shows as 503s);
 *  - global-no-redis: the global rule with no rateLimit.redis and failureMode
 *             allow: the filter chain goes asynchronous as with Redis, but
 *             without I/O, so global minus this row is the Redis round trip.
 *
 * source.ip, like nginx's $binary_remote_addr: every load connection comes
 * from 127.0.0.1, so both count one bucket. Before measuring, a local or
 * global row checks on /metrics that its rule counted a call as allowed, or it
 * would measure the baseline.
 */

const SOURCE = 'bench/lib/ratelimit-policy.ts';

/** nginx with limit_req on the same key and never-reached rate (burst: requests arriving in one millisecond). */
export function createNginxLimitReqTarget(): Target {
  return createNginxTarget({
    id: 'nginx-limit-req',
    label: 'nginx limit_req (1 worker)',
    httpDirectives: 'limit_req_zone $binary_remote_addr zone=bench:1m rate=1000000r/s;',
    locationDirectives: 'limit_req zone=bench burst=100000 nodelay;',
  });
}

export function createRateLimitSidecarTarget(options: {
  readonly id: 'sidecar' | 'local' | 'global' | 'global-no-redis';
  readonly label: string;
  /** The global row's Redis; undefined when redis-server is missing (the row is skipped with `redisMissing`). */
  readonly redisUrl?: string | undefined;
  readonly redisMissing?: string;
}): Target {
  const scope = options.id === 'local' ? 'local' : 'global';
  const expected = options.id === 'global-no-redis' ? 'unavailable_allowed' : 'allowed';
  const policyName = `bench-${options.id}`;
  return {
    id: options.id,
    label: options.label,
    async start(context) {
      if (options.id === 'global' && options.redisUrl === undefined) return { ok: false, reason: options.redisMissing ?? 'no redis-server' };
      const failureMode = options.id === 'global-no-redis' ? 'allow' : 'deny';
      const documents = options.id === 'sidecar' ? [] : [rateLimitDocument({ name: policyName, scope, rules: 1, key: ['source.ip'], failureMode })];
      const { start, snapshot } = await startMeshgateWithPolicy(context, documents, SOURCE, {
        authorization: { allowWhenNoPolicy: true },
        ...(options.redisUrl && options.id === 'global' ? { rateLimit: { redis: { url: options.redisUrl } } } : {}),
      });
      if (!start.ok || options.id === 'sidecar') return start;
      const started = start.started;
      let problem: string | undefined;
      try {
        const res = await probe(started.url, started.headers, 3000);
        const decisions = await rateLimitDecisions(started);
        const allowed = decisions.get(`${BENCH_WORKLOAD.namespace}/${policyName} r0 ${expected}`) ?? 0;
        if (res.status !== 200 || allowed < 1) {
          problem = `GET / got HTTP ${res.status}; decisions counted: ${[...decisions].map(([k, v]) => `${k}=${v}`).join(', ') || 'none'}`;
        }
      } catch (err) {
        problem = (err as Error).message;
      }
      if (problem !== undefined) {
        await started.stop();
        return { ok: false, reason: `rate limit not in force (${snapshot.file}): ${problem}` };
      }
      return start;
    },
  };
}

/** meshgate_ratelimit_decisions_total from the sidecar's /metrics, as `policy rule decision` -> count. */
async function rateLimitDecisions(started: StartedTarget): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  if (started.adminUrl === undefined) return counts;
  const res = await probe(`${started.adminUrl}/metrics`, {}, 3000);
  for (const line of res.body.split('\n')) {
    if (!line.startsWith('meshgate_ratelimit_decisions_total{')) continue;
    const label = (name: string) => new RegExp(`${name}="([^"]*)"`).exec(line)?.[1] ?? '?';
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    counts.set(`${label('policy')} ${label('rule')} ${label('decision')}`, value);
  }
  return counts;
}

/** Notes for a row: what the rule decided over warm-up and runs (every call should be `allowed`). */
export async function decisionNotes(started: StartedTarget): Promise<readonly string[]> {
  const decisions = await rateLimitDecisions(started);
  if (decisions.size === 0) return [];
  const byDecision = new Map<string, number>();
  for (const [key, count] of decisions) {
    const decision = key.slice(key.lastIndexOf(' ') + 1);
    byDecision.set(decision, (byDecision.get(decision) ?? 0) + count);
  }
  return [`rate-limit decisions: ${[...byDecision].map(([d, n]) => `${d} ${n.toLocaleString('en-US')}`).join(', ')}`];
}
