import { z } from 'zod';
import { createRegexSafetyChecker } from './regex-safety.ts';
import { byteSize, duration, headerName, httpMethod, serviceRef } from './schema-primitives.ts';

/*
 * One route schema for both places a route is written: a sidecar config's
 * services[].routes and a Route policy document's spec.routes (the same
 * shape, defaults and output, so src/outbound/router.ts compiles either).
 * The two differ only in their bounds and in when a regex is checked.
 */

export interface RouteSchemaBounds {
  /** Entries of a list (matches, headers, backends). */
  readonly maxListValues: number;
  /** Characters of a match pattern. */
  readonly maxPatternLength: number;
  /** Characters of a header value written by a route. */
  readonly maxStringLength: number;
  /**
   * `parse`: each route regex is checked for catastrophic backtracking as the
   * schema parses it (the sidecar config). `later`: only its length here;
   * policy documents check every regex of a document against one budget.
   */
  readonly regexCheck: 'parse' | 'later';
}

/** The sidecar config's bounds: those of policy documents by default (src/policy/limits.ts). */
export const CONFIG_ROUTE_BOUNDS: RouteSchemaBounds = Object.freeze({ maxListValues: 256, maxPatternLength: 512, maxStringLength: 8192, regexCheck: 'parse' });

const RETRY_ON = ['5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-status-codes', 'unavailable', 'resource-exhausted', 'cancelled', 'deadline-exceeded'] as const;

export function routeSchema(bounds: RouteSchemaBounds) {
  const list = <T extends z.ZodType>(item: T) => z.array(item).max(bounds.maxListValues);
  const pattern = () => z.string().max(bounds.maxPatternLength);
  const regex = (() => {
    const written = z.string().min(1).max(bounds.maxPatternLength);
    if (bounds.regexCheck === 'later') return written;
    const checker = createRegexSafetyChecker();
    // Checked as the router runs it (anchored), or one crafted path could stall the sidecar.
    return written.superRefine((text, ctx) => {
      try {
        new RegExp(text);
      } catch (err) {
        // Named as written, not as the router wraps it.
        ctx.addIssue({ code: 'custom', message: `not a valid regular expression (${(err as Error).message.replace(/^Invalid regular expression: /, '')})` });
        return;
      }
      const problem = checker.check(`^(?:${text})$`);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    });
  })();

  const stringMatch = z
    .strictObject({
      exact: pattern().optional().describe('Matches the whole value.'),
      prefix: pattern().optional().describe('Matches the start of the value.'),
      regex: regex.optional().describe('ECMAScript regular expression, anchored to the whole value; refused when it could backtrack catastrophically.'),
    })
    .refine((m) => [m.exact, m.prefix, m.regex].filter((v) => v !== undefined).length === 1, 'expected exactly one of exact, prefix, regex');

  const headerMatch = z
    .strictObject({
      name: z.string().min(1).max(256).describe('Header (or query parameter) name; header names are case-insensitive.'),
      exact: pattern().optional().describe('Value equals this.'),
      prefix: pattern().optional().describe('Value starts with this.'),
      regex: regex.optional().describe('Value matches this anchored regular expression (checked as the path regex is).'),
      present: z.boolean().optional().describe('true: must be present (any value); false: must be absent.'),
    })
    .refine((m) => [m.exact, m.prefix, m.regex, m.present].filter((v) => v !== undefined).length <= 1, 'expected at most one of exact, prefix, regex, present');

  const headerValues = (what: string) =>
    z
      .record(headerName, z.string().max(bounds.maxStringLength))
      .default({})
      .refine((r) => Object.keys(r).length <= bounds.maxListValues, `at most ${bounds.maxListValues} headers`)
      .describe(what);
  const headerMutation = z.strictObject({
    set: headerValues('Headers to set, replacing any value.'),
    add: headerValues('Headers to append to existing values.'),
    remove: list(headerName).default([]).describe('Header names to remove.'),
  });

  const retryPolicy = z.strictObject({
    attempts: z.number().int().min(0).max(10).default(2).describe('Retries after the first attempt (0 disables).'),
    perTryTimeout: duration.optional().describe('Timeout of each attempt; defaults to the route timeout.'),
    retryOn: list(z.enum(RETRY_ON))
      .default(['connect-failure', 'reset', 'gateway-error', 'unavailable'])
      .describe(
        'Conditions that trigger a retry (Envoy names): 5xx, gateway-error (502/503/504), reset, connect-failure, retriable-status-codes, and gRPC statuses unavailable, resource-exhausted, cancelled, deadline-exceeded.',
      ),
    statusCodes: list(z.number().int().min(100).max(599)).default([]).describe('HTTP statuses retried when retryOn has retriable-status-codes.'),
    backoff: z
      .strictObject({
        base: duration.default(25).describe('First backoff ceiling (full jitter).'),
        max: duration.default(250).describe('Largest backoff ceiling.'),
      })
      .prefault({})
      .describe('Backoff between attempts.'),
    bufferLimit: byteSize.default(65536).describe('Largest request body kept in memory so an attempt can be replayed; bigger bodies are not retried.'),
  });

  const backend = z.strictObject({
    service: serviceRef.optional().describe('Target service `name[.namespace]` (the namespace defaults to that of the routed service); defaults to the routed service.'),
    subset: z.record(z.string().max(253), z.string().max(63)).optional().describe('Only endpoints whose labels contain all of these (e.g. version: v2).'),
    weight: z.number().int().min(0).max(10000).default(1).describe('Relative share of calls.'),
  });

  return z.strictObject({
    name: z.string().max(63).optional().describe('Route name used in metrics and logs.'),
    match: z
      .strictObject({
        path: stringMatch.optional().describe('Path match (exact, prefix or regex) on the path without query.'),
        methods: list(httpMethod).optional().describe('Allowed methods; any when omitted.'),
        headers: list(headerMatch).default([]).describe('Every header match must hold.'),
        query: list(headerMatch).default([]).describe('Every query-parameter match must hold.'),
      })
      .prefault({})
      .describe('Conditions; an empty match matches every call.'),
    backends: list(backend).min(1).optional().describe('Weighted split between backends; defaults to all endpoints of the service.'),
    timeout: duration.default(15_000).describe('Whole-call timeout until the response head, all attempts included.'),
    retries: retryPolicy
      .optional()
      .describe(
        'Retry policy: a connect failure (nothing was sent) for any method; answers and resets only for idempotent methods and gRPC calls with a retryable status. Without it, connect failures alone are retried, twice, on another endpoint when there is one; `attempts: 0` turns retries off.',
      ),
    requestHeaders: headerMutation.prefault({}).describe('Request header changes.'),
    responseHeaders: headerMutation.prefault({}).describe('Response header changes.'),
  });
}
