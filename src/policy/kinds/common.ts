import { BlockList, isIP } from 'node:net';
import { z } from 'zod';
import { duration, httpMethod } from '../../config/schema-primitives.ts';
import type { PolicyLimits } from '../limits.ts';
import { POLICY_API_VERSION } from '../types.ts';

// The pieces a sidecar config shares with policy documents live with the config schemas.
export { byteSize, duration, headerName, httpMethod, serviceRef } from '../../config/schema-primitives.ts';

/*
 * Schema pieces shared by the policy kinds. Schemas are built per set of
 * limits (createPolicyValidator builds them once), so list and pattern bounds
 * are part of the schema and fail with the path of the offending field.
 *
 * Invariant: the output of every kind schema is accepted again by the same
 * schema and comes out unchanged (durations are emitted as milliseconds and
 * accepted as milliseconds). The sidecar re-validates the documents the server
 * validated, so validation must be idempotent.
 */

const DNS_LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_LABEL_MESSAGE = 'expected a DNS label (lower-case letters, digits and "-", at most 63 characters)';

const dnsLabel = z.string().max(63, DNS_LABEL_MESSAGE).regex(DNS_LABEL_RE, DNS_LABEL_MESSAGE);

/** Rule and version names: used in rule ids (`namespace/policy#rule`), metrics labels and logs. */
export const ruleName = z
  .string()
  .max(63, 'expected a rule name (letters, digits, "-", "_" and ".", at most 63 characters)')
  .regex(/^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/, 'expected a rule name (letters, digits, "-", "_" and ".", at most 63 characters)');

export const positiveDuration = duration.refine((ms) => ms > 0, 'must be longer than 0');

export const mode = z.enum(['enforce', 'shadow']).default('enforce').describe('enforce: decisions apply; shadow: evaluated and counted as would-deny (meshgate_shadow_denials_total), never enforced.');

/** A single-`*` wildcard: `*`, `prefix*`, `*suffix` or an exact value. */
export function isWildcardPattern(text: string): boolean {
  const stars = text.split('*').length - 1;
  if (stars === 0) return true;
  if (text === '*') return true;
  return stars === 1 && (text.startsWith('*') || text.endsWith('*'));
}

export const WILDCARD_MESSAGE = 'expected an exact value, "*", or one "*" at the start or end';

/**
 * Paths as AuthorizationPolicy, RateLimitPolicy and ValidationPolicy match them:
 * `*` (any), exact (`/orders`), prefix (`/orders/*`: a trailing `*` and no other),
 * or a glob where each `*` matches within one segment (`/orders/*\/items`). Rules
 * match the normalized path (issue 5), so a rule that could only match a
 * non-normalized path (`//`, `.` or `..` segments) is a mistake and refused.
 */
function pathPatternProblem(text: string): string | undefined {
  if (text === '*') return undefined;
  if (!text.startsWith('/')) return 'expected a path starting with "/" (or "*")';
  if (text.includes('**')) return '"**" is not supported: "*" matches within one segment, a trailing "*" any suffix';
  if (/[?#\s]/.test(text)) return 'paths match without the query: no "?", "#" or spaces';
  if (text.includes('//')) return 'never matches a normalized path: "//" is merged to "/" before matching';
  const segments = text.split('/');
  if (segments.some((s) => s === '.' || s === '..')) return 'never matches a normalized path: "." and ".." segments are resolved before matching';
  return undefined;
}

export function isCidr(text: string): boolean {
  if (text.includes('%')) return false;
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const family = isIP(address);
  if (family === 0) return false;
  if (slash < 0) return true;
  const bits = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > (family === 4 ? 32 : 128)) return false;
  try {
    new BlockList().addSubnet(address, Number(bits), family === 4 ? 'ipv4' : 'ipv6');
  } catch {
    return false;
  }
  return true;
}

export const cidr = z.string().max(64).refine(isCidr, 'expected an IPv4 or IPv6 CIDR like 10.0.0.0/8 or 2001:db8::/32 (or one address)');

/** Builders bound to one set of limits. */
export function schemaParts(limits: PolicyLimits) {
  const list = <T extends z.ZodType>(item: T) => z.array(item).max(limits.maxListValues);
  const ruleList = <T extends z.ZodType>(item: T) => z.array(item).max(limits.maxRules);
  const patternString = () => z.string().min(1).max(limits.maxPatternLength);
  const wildcard = () => patternString().refine(isWildcardPattern, WILDCARD_MESSAGE);
  const pathPattern = () =>
    patternString().superRefine((text, ctx) => {
      const problem = pathPatternProblem(text);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    });
  const selector = z
    .strictObject({
      services: list(dnsLabel).optional().describe('Service names; absent or empty: every service of the document namespace (in meshgate-system: services of that name in every namespace).'),
    })
    .prefault({})
    .describe('Which workloads the document applies to: those of its namespace (every namespace for meshgate-system) whose service is listed.');
  const labels = z
    .record(
      z
        .string()
        .max(253)
        .regex(/^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$/, 'expected a label key'),
      z.string().max(63),
    )
    .refine((record) => Object.keys(record).length <= limits.maxListValues, `at most ${limits.maxListValues} labels`);
  const metadata = z
    .strictObject({
      name: dnsLabel.describe('Document name, unique per kind and namespace.'),
      namespace: dnsLabel.describe('Namespace; meshgate-system documents apply to every workload of the mesh.'),
      labels: labels.optional().describe('Free-form labels for operators; no effect on enforcement.'),
    })
    .describe('Name and namespace: kind/namespace/name identifies the document.');
  const match = z
    .strictObject({
      paths: list(pathPattern()).optional().describe('Request paths (exact, prefix* or glob); any when omitted.'),
      methods: list(httpMethod).optional().describe('HTTP methods; any when omitted.'),
    })
    .describe('Which calls the rule applies to; every call when omitted.');
  return { list, ruleList, patternString, wildcard, pathPattern, selector, metadata, match };
}

export type SchemaParts = ReturnType<typeof schemaParts>;

/** `{ apiVersion, kind, metadata, spec }` for one kind. */
export function documentSchema<K extends string, S extends z.ZodType>(kind: K, parts: SchemaParts, spec: S) {
  return z.strictObject({
    apiVersion: z.literal(POLICY_API_VERSION, { error: `expected ${POLICY_API_VERSION}` }).describe(`Always ${POLICY_API_VERSION}.`),
    kind: z.literal(kind).describe('Document kind.'),
    metadata: parts.metadata,
    spec,
  });
}

/** Adds an issue for every name used twice in a list of named entries. */
export function refineUniqueNames(entries: readonly { readonly name?: string | undefined }[], ctx: z.RefinementCtx, field: string, what = 'name'): void {
  const seen = new Map<string, number>();
  entries.forEach((entry, i) => {
    if (entry.name === undefined) return;
    const first = seen.get(entry.name);
    if (first === undefined) seen.set(entry.name, i);
    else ctx.addIssue({ code: 'custom', path: [field, i, 'name'], message: `${what} "${entry.name}" is already used by ${field}[${first}]` });
  });
}

/** Where a regular expression sits in a document, and how it will run. */
export interface RegexUse {
  readonly path: readonly (string | number)[];
  /** As the user wrote it: must compile on its own (so it cannot break out of an anchoring group). */
  readonly written: string;
  /** As the matcher will run it. */
  readonly source: string;
  readonly flags: string;
}
