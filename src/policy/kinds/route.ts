import { z } from 'zod';
import { routeSchema as configRouteSchema } from '../../config/route-schema.ts';
import type { PolicyLimits } from '../limits.ts';
import { MESH_ROOT_NAMESPACE } from '../types.ts';
import type { RegexUse } from './common.ts';
import { documentSchema, refineUniqueNames, ruleName, schemaParts, serviceRef } from './common.ts';
import { routeResponsesSchema } from './route-responses.ts';

/*
 * Route: how the callers picked by `selector` reach `service`: routes tried in
 * order (one schema with a sidecar config's services[].routes,
 * src/config/route-schema.ts, so src/outbound/router.ts compiles either),
 * plus named versions (label subsets) with optional deprecation.
 */

/** Brown-out windows per version: a schedule, not a calendar; each call scans them. */
const MAX_BROWNOUTS = 32;

/** Sent in a Link header between < and >: an absolute http(s) URL of visible ASCII, nothing that would end the target. */
const successorLink = z
  .string()
  .max(2048)
  .regex(/^https?:\/\/[\x21-\x7e]+$/, 'expected an absolute http or https URL of visible ASCII (percent-encode the rest)')
  .refine((text) => !/[<>"]/.test(text) && URL.canParse(text), 'expected an absolute http or https URL without <, > or "');

function routeSpecSchema(limits: PolicyLimits) {
  const p = schemaParts(limits);
  // The sidecar config's route schema, with this document's bounds; its regexes are checked per document (routeRegexes).
  const route = configRouteSchema({ maxListValues: limits.maxListValues, maxPatternLength: limits.maxPatternLength, maxStringLength: limits.maxStringLength, regexCheck: 'later' });

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
        since: isoDate.optional().describe('When the version became (or becomes) deprecated (Deprecation header, RFC 9745); without it the header says @0: deprecated, date unknown.'),
        message: z.string().min(1).max(1024).describe('Shown to callers (x-meshgate-deprecation header, on one line) and in the log.'),
      })
      // A refinement, not a transform: the output stays the input, so validation stays idempotent (./common.ts).
      .refine((d) => d.since === undefined || parsePolicyDate(d.since) <= parsePolicyDate(d.sunset), {
        message: 'since must not be later than sunset (RFC 9745: a resource is deprecated before it goes away)',
        path: ['since'],
      })
      .optional()
      .describe('Marks the version deprecated: calls still work and are answered with Deprecation and Sunset headers.'),
    brownouts: z
      .array(
        z
          .strictObject({
            start: isoDate.describe('When the brown-out begins (a bare date is midnight UTC).'),
            end: isoDate.describe('When it ends: calls work again from this instant.'),
          })
          // A date that is no date has its own error already.
          .refine((w) => !(parsePolicyDate(w.end) <= parsePolicyDate(w.start)), { message: 'end must be later than start', path: ['end'] }),
      )
      .max(MAX_BROWNOUTS)
      .optional()
      .describe(`Scheduled periods (at most ${MAX_BROWNOUTS}) in which calls to the version get 410 route.version_brownout with a pointer to the successor, so callers notice before it is retired.`),
    retired: z.boolean().optional().describe('true: every call to the version gets 410 route.version_retired with a pointer to the successor.'),
    successor: z
      .strictObject({
        version: ruleName.optional().describe('Another version of this Route that callers should pin instead (named in the 410 reply).'),
        link: successorLink.optional().describe('An http(s) URL about the successor, sent as `Link: <URL>; rel="successor-version"` on the 410 reply.'),
      })
      .refine((s) => s.version !== undefined || s.link !== undefined, 'expected version, link or both')
      .optional()
      .describe('Where callers of a retired or browned-out version should go.'),
  });

  return z
    .strictObject({
      selector: p.selector.describe('The callers this Route applies to (their outbound side): workloads of the namespace whose service is listed.'),
      service: serviceRef.describe('Destination `name[.namespace]`; namespace defaults to the document namespace.'),
      routes: p.ruleList(route).default([]).describe('Routes tried in order; when none matches (or none is given) calls go to all endpoints.'),
      versions: p.ruleList(version).optional().describe('Named versions of the destination.'),
      responses: routeResponsesSchema(limits),
    })
    .superRefine((spec, ctx) => {
      if (spec.versions) refineUniqueNames(spec.versions, ctx, 'versions', 'version name');
      if (spec.responses) refineUniqueNames(spec.responses, ctx, 'responses', 'rule name');
      spec.versions?.forEach((v, i) => {
        const next = v.successor?.version;
        if (next === undefined) return;
        // A successor is a version of this Route: a name callers can pin here.
        if (next === v.name) ctx.addIssue({ code: 'custom', message: 'a version cannot be its own successor', path: ['versions', i, 'successor', 'version'] });
        else if (!spec.versions!.some((other) => other.name === next))
          ctx.addIssue({ code: 'custom', message: `no version named ${next} in this Route`, path: ['versions', i, 'successor', 'version'] });
      });
    });
}

export function routeSchema(limits: PolicyLimits) {
  return documentSchema('Route', schemaParts(limits), routeSpecSchema(limits)).superRefine((doc, ctx) => {
    // Responses are the destination's: only its own namespace (or the mesh root) may change them.
    if (doc.spec.responses === undefined || doc.metadata.namespace === MESH_ROOT_NAMESPACE) return;
    const target = resolveServiceRef(doc.spec.service, doc.metadata.namespace);
    if (target.namespace !== doc.metadata.namespace)
      ctx.addIssue({
        code: 'custom',
        path: ['spec', 'responses'],
        message: `responses apply on ${doc.spec.service}'s own sidecar: only a Route in namespace ${target.namespace} (or ${MESH_ROOT_NAMESPACE}) may set them`,
      });
  });
}

type RouteSpec = z.output<ReturnType<typeof routeSpecSchema>>;
export type RouteDocument = z.output<ReturnType<typeof routeSchema>>;
export type PolicyRoute = RouteSpec['routes'][number];
type RouteVersion = NonNullable<RouteSpec['versions']>[number];

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
