import { z } from 'zod';
import type { PolicyLimits } from '../limits.ts';
import { byteSize, headerName, ruleName, schemaParts } from './common.ts';

/*
 * A Route's `responses`: what the inbound sidecar of the Route's `service`
 * does with that service's responses (issue 15, response side), per rule
 * matched by path and method: a response cache for GET and HEAD, and
 * hardening (strip revealing headers, cap the size, add security headers).
 * Unlike the rest of a Route, which its selector's callers apply on their
 * outbound side, these apply where the responses are made; the policy server
 * delivers the Route to that service's sidecars too (src/policy/snapshot.ts).
 */

/** Largest response body one cache entry may hold when a rule does not say. */
const DEFAULT_MAX_ENTRY_BYTES = 1_048_576;

/** Headers that name the server or its framework, stripped by every hardening rule. */
export const DEFAULT_STRIPPED_HEADERS: readonly string[] = Object.freeze([
  'server',
  'x-powered-by',
  'x-aspnet-version',
  'x-aspnetmvc-version',
  'x-runtime',
  'x-generator',
  'x-drupal-cache',
  'x-varnish-backend',
]);

export function routeResponsesSchema(limits: PolicyLimits) {
  const p = schemaParts(limits);
  const headerValue = z
    .string()
    .min(1)
    .max(Math.min(limits.maxStringLength, 8192))
    // Sent as a header value as written: no line break or other control character may split the head.
    .regex(/^[\t\x20-\x7e\x80-\xff]+$/, 'expected a header value of visible characters (no line breaks or control characters)');

  const cache = z.strictObject({
    maxEntryBytes: byteSize
      .default(DEFAULT_MAX_ENTRY_BYTES)
      .describe('Largest response body cached; a larger one is relayed as it streams and not kept. The sidecar-wide total is limits.maxResponseCache.'),
    cacheAuthenticated: z
      .boolean()
      .default(false)
      .describe(
        "true: calls with an Authorization header or a verified request principal are cached too, each under its caller (the verified principal, else the credential) so one caller is never served another caller's answer. false (default): such calls bypass the cache.",
      ),
  });

  const hardening = z.strictObject({
    stripHeaders: p
      .list(headerName)
      .default([])
      .describe(`Response headers removed on top of the defaults (${DEFAULT_STRIPPED_HEADERS.join(', ')}).`),
    maxResponseBytes: byteSize
      .refine((n) => n > 0, 'must be more than 0')
      .optional()
      .describe(
        'Largest response body relayed: a larger Content-Length gets 502 response.too_large instead; a body that grows past it while streaming is cut off (the caller reset) and logged with that reason.',
      ),
    securityHeaders: z
      .record(headerName, headerValue)
      .refine((r) => Object.keys(r).length <= limits.maxListValues, `at most ${limits.maxListValues} headers`)
      .default({})
      .describe('Headers added to every response (e.g. strict-transport-security, x-content-type-options, content-security-policy, referrer-policy) when the app did not set them.'),
    overrideSecurityHeaders: z.boolean().default(false).describe('true: securityHeaders replace the values the app set.'),
  });

  return p
    .ruleList(
      z
        .strictObject({
          name: ruleName.describe('Rule name, in logs and metrics labels.'),
          match: p.match.optional(),
          cache: cache.optional().describe('Cache GET and HEAD responses of the matched calls (RFC 9111, as a shared cache).'),
          hardening: hardening.optional().describe('Response hardening of the matched calls.'),
        })
        .refine((r) => r.cache !== undefined || r.hardening !== undefined, 'expected cache, hardening or both'),
    )
    .optional()
    .describe(
      "Rules for the responses of `service`, applied by that service's own (inbound) sidecar, first matching rule only. Only a Route in the service's namespace (or meshgate-system) may set them.",
    );
}

export type RouteResponseRule = NonNullable<z.output<ReturnType<typeof routeResponsesSchema>>>[number];
