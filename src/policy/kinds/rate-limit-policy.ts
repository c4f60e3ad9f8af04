import { z } from 'zod';
import type { PolicyLimits } from '../limits.ts';
import { cidr, documentSchema, headerName, mode, positiveDuration, refineUniqueNames, ruleName, schemaParts } from './common.ts';

/*
 * RateLimitPolicy: token buckets keyed by who calls. `limit` is the sustained
 * rate (requests per `per`), `burst` the bucket size (default: requests).
 * `scope: global` shares counters between sidecars through Redis. A rule with
 * `throttle` queues a caller over its rate instead of refusing it at once; a
 * rule with `concurrency` (instead of `limit`) caps the calls in flight.
 * Enforced by src/filters/ratelimit (GCRA: the same bucket in memory and in Redis).
 */

const RATE_LIMIT_KEY_RE = /^(source\.principal|source\.ip|header:[a-z0-9!#$%&'*+.^_`|~-]+|claim:[^\s]+)$/;

const keyPart = z
  .string()
  .max(256)
  .transform((k) => (k.startsWith('header:') ? `header:${k.slice(7).toLowerCase()}` : k))
  .refine((k) => RATE_LIMIT_KEY_RE.test(k), 'expected source.principal, source.ip, header:NAME or claim:NAME')
  .refine((k) => !k.startsWith('header:') || headerName.safeParse(k.slice(7)).success, 'expected an HTTP header name after "header:"');

function rateLimitPolicySpecSchema(limits: PolicyLimits) {
  const p = schemaParts(limits);
  const rule = z
    .strictObject({
      name: ruleName.describe('Rule name in decision ids, metrics and counters.'),
      match: p.match.optional(),
      key: p
        .list(keyPart)
        .min(1)
        .optional()
        .describe(
          'What a bucket (or a concurrency limit) is per: source.principal, source.ip, header:NAME, claim:NAME (combined when several). Required with limit; without it a concurrency rule is one limit for every call it matches.',
        ),
      limit: z
        .strictObject({
          requests: z.number().int().min(1).describe('Requests allowed per period.'),
          per: positiveDuration.describe('The period, e.g. 1s or 1m.'),
        })
        .optional()
        .describe('Sustained rate. Every rule has either limit or concurrency.'),
      throttle: z
        .strictObject({
          queue: z.number().int().min(1).max(10_000).describe('Callers of one bucket that may wait at once; the next one gets 429 ratelimit.throttle_queue_full.'),
          maxDelay: positiveDuration.describe('Longest wait: a caller whose turn would come later gets 429 ratelimit.throttle_delay_exceeded at once.'),
        })
        .optional()
        .describe('scope local only: a caller over the rate waits in a FIFO queue of its bucket and is released at the rate, instead of a 429 at once.'),
      concurrency: z
        .strictObject({
          max: z.number().int().min(1).max(1_000_000).describe('Calls in flight at once (per key, when the rule has one), from admission to the end of the response.'),
          queue: z.number().int().min(0).max(10_000).default(0).describe('Calls that may wait for a slot (per key); past it 503 ratelimit.concurrency_exceeded.'),
          maxWait: positiveDuration.optional().describe('Longest wait for a slot (required with a queue); then 503 ratelimit.concurrency_timeout.'),
        })
        .optional()
        .describe('Instead of limit: at most max calls in flight, a bounded queue, then 503. Counted by each sidecar (and each worker) on its own.'),
      burst: z.number().int().min(1).max(1_000_000).optional().describe('Bucket size: requests allowed at once; defaults to limit.requests.'),
      scope: z.enum(['local', 'global']).default('local').describe('local: per sidecar; global: shared by every sidecar through Redis.'),
      failureMode: z
        .enum(['deny', 'allow', 'local'])
        .optional()
        .describe(
          'scope global only: what a call gets when Redis cannot answer in time. deny (the default): 503 ratelimit.unavailable; allow: admitted unlimited; local: the same limit counted by this sidecar alone.',
        ),
      localFallback: z
        .enum(['split', 'per-replica'])
        .optional()
        .describe(
          'failureMode local only: split (the default): each sidecar counts the limit divided by the replicas of its service in the registry, so the total stays near the limit; per-replica: each counts the whole limit (the total multiplies by the replicas).',
        ),
      responseHeaders: z
        .enum(['all', 'refusals', 'none'])
        .optional()
        .describe(
          'Which responses carry the rule in RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers): all (the default: every call it counted, so clients can slow down before a refusal), refusals (429 and 503 only), none. Shadow rules never do.',
        ),
    })
    .superRefine((rule, ctx) => {
      if (rule.limit === undefined && rule.concurrency === undefined) ctx.addIssue({ code: 'custom', path: ['limit'], message: 'a rule needs limit (a rate) or concurrency (calls in flight)' });
      if (rule.limit !== undefined && rule.concurrency !== undefined) ctx.addIssue({ code: 'custom', path: ['concurrency'], message: 'a rule has limit or concurrency, not both: write two rules' });
      if (rule.limit !== undefined && rule.key === undefined) ctx.addIssue({ code: 'custom', path: ['key'], message: 'required with limit: what each bucket is per' });
      if (rule.concurrency !== undefined) {
        // A concurrency slot lives only as long as a call in this process: there is no bucket to shape, share or report.
        for (const field of ['burst', 'failureMode', 'localFallback', 'responseHeaders', 'throttle'] as const) {
          if (rule[field] !== undefined) ctx.addIssue({ code: 'custom', path: [field], message: 'does not apply to a concurrency rule' });
        }
        if (rule.scope === 'global') ctx.addIssue({ code: 'custom', path: ['scope'], message: 'concurrency is counted by each sidecar: scope global does not apply' });
        const { queue, maxWait } = rule.concurrency;
        if (queue > 0 && maxWait === undefined) ctx.addIssue({ code: 'custom', path: ['concurrency', 'maxWait'], message: 'required with a queue: how long a call may wait for a slot' });
        if (queue === 0 && maxWait !== undefined) ctx.addIssue({ code: 'custom', path: ['concurrency', 'maxWait'], message: 'only applies with a queue (queue above 0)' });
      }
      if (rule.throttle !== undefined && rule.scope === 'global') {
        // A queue in one sidecar cannot hold a caller's turn in a bucket every sidecar takes from.
        ctx.addIssue({ code: 'custom', path: ['throttle'], message: "only applies to scope: local (a global bucket is shared through Redis; its callers cannot wait in one sidecar's queue)" });
      }
      if (rule.failureMode !== undefined && rule.scope !== 'global') {
        ctx.addIssue({ code: 'custom', path: ['failureMode'], message: 'only applies to scope: global (a local bucket cannot fail)' });
      }
      if (rule.localFallback !== undefined && rule.failureMode !== 'local') {
        ctx.addIssue({ code: 'custom', path: ['localFallback'], message: 'only applies to failureMode: local' });
      }
      // One token per emission interval: below a microsecond the bucket cannot be counted.
      if (rule.limit && rule.limit.per > 0 && rule.limit.per * 1000 < rule.limit.requests) {
        ctx.addIssue({ code: 'custom', path: ['limit', 'requests'], message: 'at most 1000 requests per millisecond of the period' });
      }
    });
  return z
    .strictObject({
      selector: p.selector,
      mode,
      trustedProxies: p
        .list(cidr)
        .optional()
        .describe('Peers (load balancers, edge proxies) whose x-forwarded-for names the client for source.ip keys, as in IPAccessPolicy; without it source.ip is the connection address.'),
      rules: p
        .ruleList(rule)
        .min(1)
        .describe('Every matching rule counts the call, in order; the call is refused (429, ratelimit.exceeded) when one bucket is empty, or waits at a throttle or concurrency rule.'),
    })
    .superRefine((spec, ctx) => refineUniqueNames(spec.rules, ctx, 'rules', 'rule name'));
}

export function rateLimitPolicySchema(limits: PolicyLimits) {
  return documentSchema('RateLimitPolicy', schemaParts(limits), rateLimitPolicySpecSchema(limits));
}

type RateLimitPolicySpec = z.output<ReturnType<typeof rateLimitPolicySpecSchema>>;
export type RateLimitPolicyDocument = z.output<ReturnType<typeof rateLimitPolicySchema>>;
export type RateLimitRule = RateLimitPolicySpec['rules'][number];
