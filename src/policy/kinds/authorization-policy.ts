import { z } from 'zod';
import type { PolicyLimits } from '../limits.ts';
import { cidr, documentSchema, headerName, httpMethod, isCidr, isWildcardPattern, mode, refineUniqueNames, ruleName, schemaParts, WILDCARD_MESSAGE } from './common.ts';

/*
 * AuthorizationPolicy, modelled on Istio's: DENY policies are evaluated before
 * ALLOW ones, AUDIT ones only log (semantics: issue 5, src/filters/authz/).
 * In a rule, one `from` entry and one `to` entry must match (absent: any) and
 * every `when` condition must hold. Inside one entry, every field present must
 * hold; a field with a list holds when one value matches.
 */

/** `request.auth.claims[NAME]` (nested: `[a][b]`), `request.headers[NAME]`, `source.ip|namespace|principal`. */
const CONDITION_KEY_RE = /^(request\.auth\.claims(\[[^[\]]+\])+|request\.headers\[[^[\]]+\]|source\.ip|source\.namespace|source\.principal)$/;

const SOURCE_FIELDS = ['principals', 'notPrincipals', 'namespaces', 'notNamespaces', 'ipBlocks', 'notIpBlocks', 'requestPrincipals', 'notRequestPrincipals'] as const;
const OPERATION_FIELDS = ['methods', 'notMethods', 'paths', 'notPaths', 'hosts', 'ports', 'grpc'] as const;

const grpcName = z
  .string()
  .max(256)
  .regex(/^(\*|[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)$/, 'expected a fully qualified gRPC name like shop.v1.Orders (or "*")');

function authorizationPolicySpecSchema(limits: PolicyLimits) {
  const p = schemaParts(limits);
  const cidrs = () => p.list(cidr);
  const hostPattern = p
    .wildcard()
    .transform((h) => h.toLowerCase())
    .refine((h) => /^[a-z0-9.\-:[\]*]+$/.test(h), 'expected a host like api.example.com, *.example.com or example.com:8080');

  const source = z
    .strictObject({
      principals: p.list(p.wildcard()).optional().describe('Peer SPIFFE IDs from mTLS; `*` prefix/suffix wildcards (spiffe://cluster.local/ns/shop/*).'),
      notPrincipals: p.list(p.wildcard()).optional().describe('Peer SPIFFE IDs that must not match.'),
      namespaces: p.list(p.wildcard()).optional().describe('Namespaces of the peer identity.'),
      notNamespaces: p.list(p.wildcard()).optional().describe('Namespaces that must not match.'),
      ipBlocks: cidrs().optional().describe('Source address in one of these CIDRs.'),
      notIpBlocks: cidrs().optional().describe('Source address in none of these CIDRs.'),
      requestPrincipals: p.list(p.wildcard()).optional().describe('Verified JWT `iss/sub`, with wildcards (https://issuer.example/*).'),
      notRequestPrincipals: p.list(p.wildcard()).optional().describe('JWT `iss/sub` that must not match.'),
    })
    .refine((s) => SOURCE_FIELDS.some((f) => s[f] !== undefined), `expected at least one of ${SOURCE_FIELDS.join(', ')} (omit "from" to match any source)`);

  const operation = z
    .strictObject({
      methods: p.list(httpMethod).optional().describe('HTTP methods (upper-cased).'),
      notMethods: p.list(httpMethod).optional().describe('Methods that must not match.'),
      paths: p.list(p.pathPattern()).optional().describe('Normalized paths: exact, `prefix*`, or glob where `*` stays within one segment (/orders/*/items).'),
      notPaths: p.list(p.pathPattern()).optional().describe('Paths that must not match.'),
      hosts: p.list(hostPattern).optional().describe('Host (authority) with `*` prefix/suffix wildcards; lower-cased.'),
      ports: p.list(z.number().int().min(1).max(65535)).optional().describe('Destination ports.'),
      grpc: z
        .strictObject({
          service: grpcName.optional().describe('Fully qualified service, e.g. shop.v1.Orders.'),
          method: grpcName.optional().describe('Method name, e.g. GetOrder.'),
        })
        .refine((g) => g.service !== undefined || g.method !== undefined, 'expected service, method or both')
        .optional()
        .describe('gRPC service and method (from the :path /pkg.Service/Method).'),
    })
    .refine((o) => OPERATION_FIELDS.some((f) => o[f] !== undefined), `expected at least one of ${OPERATION_FIELDS.join(', ')} (omit "to" to match any operation)`);

  const condition = z
    .strictObject({
      key: z
        .string()
        .max(limits.maxPatternLength)
        .regex(CONDITION_KEY_RE, 'expected request.auth.claims[NAME], request.headers[NAME], source.ip, source.namespace or source.principal')
        .describe('What is compared: a verified JWT claim, a request header, or the source.'),
      values: p.list(p.patternString()).optional().describe('The condition holds when the value matches one of these (exact, or `*` wildcards).'),
      notValues: p.list(p.patternString()).optional().describe('The condition holds when the value matches none of these.'),
    })
    .superRefine((c, ctx) => {
      if (c.values === undefined && c.notValues === undefined) ctx.addIssue({ code: 'custom', message: 'expected values, notValues or both' });
      const header = /^request\.headers\[(.+)\]$/.exec(c.key);
      if (header && !headerName.safeParse(header[1]).success) ctx.addIssue({ code: 'custom', path: ['key'], message: `"${header[1]}" is not an HTTP header name` });
      for (const field of ['values', 'notValues'] as const) {
        c[field]?.forEach((value, i) => {
          if (c.key === 'source.ip' && !isCidr(value)) ctx.addIssue({ code: 'custom', path: [field, i], message: 'expected an IPv4 or IPv6 CIDR (the key is source.ip)' });
          else if (c.key !== 'source.ip' && !isWildcardPattern(value)) ctx.addIssue({ code: 'custom', path: [field, i], message: WILDCARD_MESSAGE });
        });
      }
    });

  const rule = z.strictObject({
    name: ruleName.optional().describe('Rule name in decision ids (`namespace/policy#name`); defaults to the rule index.'),
    from: p.list(source).min(1).optional().describe('Sources; one must match. Any source when omitted.'),
    to: p.list(operation).min(1).optional().describe('Operations; one must match. Any operation when omitted.'),
    when: p.list(condition).min(1).optional().describe('Conditions; all must hold.'),
  });

  return z
    .strictObject({
      selector: p.selector,
      action: z.enum(['ALLOW', 'DENY', 'AUDIT']).default('ALLOW').describe('ALLOW admits matching calls, DENY refuses them (checked first), AUDIT logs them.'),
      mode,
      rules: p.ruleList(rule).default([]).describe('A call matches the policy when one rule matches. An ALLOW policy without rules admits nothing.'),
    })
    .superRefine((spec, ctx) => refineUniqueNames(spec.rules, ctx, 'rules', 'rule name'));
}

export function authorizationPolicySchema(limits: PolicyLimits) {
  return documentSchema('AuthorizationPolicy', schemaParts(limits), authorizationPolicySpecSchema(limits));
}

type AuthorizationPolicySpec = z.output<ReturnType<typeof authorizationPolicySpecSchema>>;
export type AuthorizationPolicyDocument = z.output<ReturnType<typeof authorizationPolicySchema>>;
export type AuthorizationRule = AuthorizationPolicySpec['rules'][number];
