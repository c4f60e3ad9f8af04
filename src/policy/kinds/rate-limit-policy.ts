import { z } from 'zod';
import type { PolicyLimits } from '../limits.ts';
import { cidr, documentSchema, headerName, mode, positiveDuration, refineUniqueNames, ruleName, schemaParts } from './common.ts';

/*
 * RateLimitPolicy: token buckets keyed by who calls. `limit` is the sustained
 * rate (requests per `per`), `burst` the bucket size (default: requests).
 * `scope: global` shares counters between sidecars through Redis.
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
      key: p.list(keyPart).min(1).describe('What a bucket is per: source.principal, source.ip, header:NAME, claim:NAME (combined when several).'),
      limit: z
        .strictObject({
          requests: z.number().int().min(1).describe('Requests allowed per period.'),
          per: positiveDuration.describe('The period, e.g. 1s or 1m.'),
        })
        .describe('Sustained rate.'),
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
      if (rule.failureMode !== undefined && rule.scope !== 'global') {
        ctx.addIssue({ code: 'custom', path: ['failureMode'], message: 'only applies to scope: global (a local bucket cannot fail)' });
      }
      if (rule.localFallback !== undefined && rule.failureMode !== 'local') {
        ctx.addIssue({ code: 'custom', path: ['localFallback'], message: 'only applies to failureMode: local' });
      }
      // One token per emission interval: below a microsecond the bucket cannot be counted.
      if (rule.limit.per > 0 && rule.limit.per * 1000 < rule.limit.requests) {
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
      rules: p.ruleList(rule).min(1).describe('Every matching rule takes a token; the call is refused (429, ratelimit.exceeded) when one bucket is empty.'),
    })
    .superRefine((spec, ctx) => refineUniqueNames(spec.rules, ctx, 'rules', 'rule name'));
}

export function rateLimitPolicySchema(limits: PolicyLimits) {
  return documentSchema('RateLimitPolicy', schemaParts(limits), rateLimitPolicySpecSchema(limits));
}

type RateLimitPolicySpec = z.output<ReturnType<typeof rateLimitPolicySpecSchema>>;
export type RateLimitPolicyDocument = z.output<ReturnType<typeof rateLimitPolicySchema>>;
type RateLimitRule = RateLimitPolicySpec['rules'][number];
