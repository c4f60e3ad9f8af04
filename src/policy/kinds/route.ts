import { z } from 'zod';
import type { PolicyLimits } from '../limits.ts';
import { byteSize, documentSchema, duration, headerName, httpMethod, refineUniqueNames, ruleName, schemaParts, serviceRef } from './common.ts';
import type { RegexUse } from './common.ts';

/*
 * Route: how the callers picked by `selector` reach `service`: routes tried in
 * order (the same shape, defaults and output as a sidecar config's
 * services[].routes, so src/outbound/router.ts compiles either), plus named
 * versions (label subsets) with optional deprecation.
 *
 * Why a mirror and not an import of the sidecar schema: policy documents must
 * re-validate to themselves (durations come out as milliseconds and must be
 * accepted as milliseconds), their lists are bounded by PolicyLimits, and
 * their regexes are checked for catastrophic backtracking. A unit test keeps
 * the field names of both in step (test/unit/policy/kinds.test.ts).
 */

export function routeSpecSchema(limits: PolicyLimits) {
  const p = schemaParts(limits);
  const regex = z.string().min(1).max(limits.maxPatternLength);

  const stringMatch = z
    .strictObject({
      exact: z.string().max(limits.maxPatternLength).optional().describe('Matches the whole value.'),
      prefix: z.string().max(limits.maxPatternLength).optional().describe('Matches the start of the value.'),
      regex: regex.optional().describe('ECMAScript regular expression, anchored to the whole value; checked for catastrophic backtracking.'),
    })
    .refine((m) => [m.exact, m.prefix, m.regex].filter((v) => v !== undefined).length === 1, 'expected exactly one of exact, prefix, regex');

  const headerMatch = z
    .strictObject({
      name: z.string().min(1).max(256).describe('Header (or query parameter) name; header names are case-insensitive.'),
      exact: z.string().max(limits.maxPatternLength).optional().describe('Value equals this.'),
      prefix: z.string().max(limits.maxPatternLength).optional().describe('Value starts with this.'),
      regex: regex.optional().describe('Value matches this anchored regular expression.'),
      present: z.boolean().optional().describe('true: must be present (any value); false: must be absent.'),
    })
    .refine((m) => [m.exact, m.prefix, m.regex, m.present].filter((v) => v !== undefined).length <= 1, 'expected at most one of exact, prefix, regex, present');

  const headerMutation = z.strictObject({
    set: z
      .record(headerName, z.string().max(limits.maxStringLength))
      .default({})
      .refine((r) => Object.keys(r).length <= limits.maxListValues, `at most ${limits.maxListValues} headers`)
      .describe('Headers to set, replacing any value.'),
    add: z
      .record(headerName, z.string().max(limits.maxStringLength))
      .default({})
      .refine((r) => Object.keys(r).length <= limits.maxListValues, `at most ${limits.maxListValues} headers`)
      .describe('Headers to append to existing values.'),
    remove: p.list(headerName).default([]).describe('Header names to remove.'),
  });

  const retryOn = z.enum(['5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-status-codes', 'unavailable', 'resource-exhausted', 'cancelled', 'deadline-exceeded']);

  const retryPolicy = z.strictObject({
    attempts: z.number().int().min(0).max(10).default(2).describe('Retries after the first attempt (0 disables).'),
    perTryTimeout: duration.optional().describe('Timeout of each attempt; defaults to the route timeout.'),
    retryOn: p
      .list(retryOn)
      .default(['connect-failure', 'reset', 'gateway-error', 'unavailable'])
      .describe('Conditions that trigger a retry (Envoy names).'),
    statusCodes: p.list(z.number().int().min(100).max(599)).default([]).describe('HTTP statuses retried when retryOn has retriable-status-codes.'),
    backoff: z
      .strictObject({
        base: duration.default(25).describe('First backoff ceiling (full jitter).'),
        max: duration.default(250).describe('Largest backoff ceiling.'),
      })
      .prefault({})
      .describe('Backoff between attempts.'),
    bufferLimit: byteSize.default(65536).describe('Largest request body kept in memory so an attempt can be replayed.'),
  });

  const backend = z.strictObject({
    service: serviceRef.optional().describe('Target service `name[.namespace]` (namespace defaults to that of spec.service); defaults to spec.service.'),
    subset: z.record(z.string().max(253), z.string().max(63)).optional().describe('Only endpoints whose labels contain all of these (e.g. version: v2).'),
    weight: z.number().int().min(0).max(10000).default(1).describe('Relative share of calls.'),
  });

  const route = z.strictObject({
    name: z.string().max(63).optional().describe('Route name used in metrics and logs.'),
    match: z
      .strictObject({
        path: stringMatch.optional().describe('Path match (exact, prefix or regex) on the path without query.'),
        methods: p.list(httpMethod).optional().describe('Allowed methods; any when omitted.'),
        headers: p.list(headerMatch).default([]).describe('Every header match must hold.'),
        query: p.list(headerMatch).default([]).describe('Every query-parameter match must hold.'),
      })
      .prefault({})
      .describe('Conditions; an empty match matches every call.'),
    backends: p.list(backend).min(1).optional().describe('Weighted split between backends; defaults to all endpoints of the service.'),
    timeout: duration.default(15_000).describe('Whole-call timeout until the response head, all attempts included.'),
    retries: retryPolicy.optional().describe('Retry policy; only idempotent methods and retryable gRPC statuses are retried.'),
    requestHeaders: headerMutation.prefault({}).describe('Request header changes.'),
    responseHeaders: headerMutation.prefault({}).describe('Response header changes.'),
  });

  const isoDate = z
    .string()
    .regex(/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$/, 'expected an ISO 8601 date like 2026-06-30 or 2026-06-30T00:00:00Z')
    .refine(isCalendarDate, 'expected a calendar date like 2026-06-30 or 2026-06-30T00:00:00Z');

  const version = z.strictObject({
    name: ruleName.describe('Version name callers ask for (e.g. v2).'),
    subset: z
      .record(z.string().max(253), z.string().max(63))
      .refine((r) => Object.keys(r).length > 0, 'expected at least one label')
      .describe('Endpoint labels of this version (e.g. version: v2).'),
    deprecated: z
      .strictObject({
        sunset: isoDate.describe('When the version goes away (Sunset header, RFC 8594). Calls still work after it: operators remove the version.'),
        since: isoDate
          .optional()
          .describe('When the version became (or becomes) deprecated (Deprecation header, RFC 9745); without it the header says @0: deprecated, date unknown.'),
        message: z.string().min(1).max(1024).describe('Shown to callers (x-meshgate-deprecation header, on one line) and in the log.'),
      })
      // A refinement, not a transform: the output stays the input, so validation stays idempotent (./common.ts).
      .refine((d) => d.since === undefined || parsePolicyDate(d.since) <= parsePolicyDate(d.sunset), {
        message: 'since must not be later than sunset (RFC 9745: a resource is deprecated before it goes away)',
        path: ['since'],
      })
      .optional()
      .describe('Marks the version deprecated: calls still work and are answered with Deprecation and Sunset headers.'),
  });

  return z
    .strictObject({
      selector: p.selector.describe('The callers this Route applies to (their outbound side): workloads of the namespace whose service is listed.'),
      service: serviceRef.describe('Destination `name[.namespace]`; namespace defaults to the document namespace.'),
      routes: p.ruleList(route).default([]).describe('Routes tried in order; when none matches (or none is given) calls go to all endpoints.'),
      versions: p.ruleList(version).optional().describe('Named versions of the destination.'),
    })
    .superRefine((spec, ctx) => {
      if (spec.versions) refineUniqueNames(spec.versions, ctx, 'versions', 'version name');
    });
}

export function routeSchema(limits: PolicyLimits) {
  return documentSchema('Route', schemaParts(limits), routeSpecSchema(limits));
}

export type RouteSpec = z.output<ReturnType<typeof routeSpecSchema>>;
export type RouteDocument = z.output<ReturnType<typeof routeSchema>>;
export type PolicyRoute = RouteSpec['routes'][number];
export type RouteVersion = NonNullable<RouteSpec['versions']>[number];

/** Milliseconds since the epoch; a bare date is midnight UTC (the sidecar reads dates the same way). */
function parsePolicyDate(text: string): number {
  return Date.parse(text.length === 10 ? `${text}T00:00:00Z` : text);
}

function isCalendarDate(text: string): boolean {
  if (Number.isNaN(parsePolicyDate(text))) return false;
  // Date.parse rolls 2026-02-30 over into March: the day must survive a round trip.
  const year = Number(text.slice(0, 4));
  const month = Number(text.slice(5, 7));
  const day = Number(text.slice(8, 10));
  const date = new Date(Date.UTC(year, month - 1, day));
  return date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}

/** `name[.ns]` -> `{ name, namespace }`, the namespace defaulting to `defaultNamespace`. */
export function resolveServiceRef(ref: string, defaultNamespace: string): { readonly name: string; readonly namespace: string } {
  const dot = ref.indexOf('.');
  return dot < 0 ? { name: ref, namespace: defaultNamespace } : { name: ref.slice(0, dot), namespace: ref.slice(dot + 1) };
}

/** Route regexes, as src/outbound/router.ts runs them: anchored `^(?:...)$`, no flags. */
export function routeRegexes(doc: RouteDocument): RegexUse[] {
  const uses: RegexUse[] = [];
  const anchored = (source: string) => `^(?:${source})$`;
  doc.spec.routes.forEach((route, r) => {
    const base = ['spec', 'routes', r, 'match'];
    if (route.match.path?.regex !== undefined) uses.push({ path: [...base, 'path', 'regex'], written: route.match.path.regex, source: anchored(route.match.path.regex), flags: '' });
    for (const list of ['headers', 'query'] as const) {
      route.match[list].forEach((m, i) => {
        if (m.regex !== undefined) uses.push({ path: [...base, list, i, 'regex'], written: m.regex, source: anchored(m.regex), flags: '' });
      });
    }
  });
  return uses;
}
