import { z } from 'zod';
import type { PolicyLimits } from '../limits.ts';
import { cidr, documentSchema, positiveDuration, schemaParts } from './common.ts';

/*
 * IPAccessPolicy: allow and deny lists by the connection's address, or by
 * `x-forwarded-for` only when the connection comes from a trusted proxy.
 * Deny wins over allow; with an allow list, an address outside it is refused.
 */

function ipAccessPolicySpecSchema(limits: PolicyLimits) {
  const p = schemaParts(limits);
  return z
    .strictObject({
      selector: p.selector,
      allow: p.list(cidr).optional().describe('Only these CIDRs are admitted (IPv4 and IPv6); any address when omitted.'),
      deny: p.list(cidr).optional().describe('These CIDRs are refused (ip.denied); checked before allow.'),
      trustedProxies: p.list(cidr).optional().describe('Proxies whose x-forwarded-for is believed: the client address is the last one not in this list. Without it, x-forwarded-for is ignored.'),
      autoBan: z
        .strictObject({
          threshold: z.number().int().min(1).describe('Denied or rate-limited calls from one address that trigger a ban.'),
          window: positiveDuration.default(60_000).describe('Period the threshold is counted over.'),
          duration: positiveDuration.default(600_000).describe('How long a ban lasts.'),
          maxEntries: z.number().int().min(1).max(1_000_000).default(10_000).describe('Most addresses banned at once; the oldest ban is dropped first.'),
        })
        .optional()
        .describe('Temporary deny list for addresses that keep being refused.'),
    })
    .refine((spec) => spec.allow !== undefined || spec.deny !== undefined || spec.autoBan !== undefined, 'expected at least one of allow, deny, autoBan');
}

export function ipAccessPolicySchema(limits: PolicyLimits) {
  return documentSchema('IPAccessPolicy', schemaParts(limits), ipAccessPolicySpecSchema(limits));
}

export type IPAccessPolicySpec = z.output<ReturnType<typeof ipAccessPolicySpecSchema>>;
export type IPAccessPolicyDocument = z.output<ReturnType<typeof ipAccessPolicySchema>>;
