import type { RouteConfig } from '../config/sidecar-schema.ts';
import type { CallContext } from '../core/call-context.ts';
import { parseSpiffeId } from '../core/spiffe-id.ts';
import type { RespondVerdict } from '../core/verdict.ts';
import { retirementAt } from '../outbound/retirement-windows.ts';
import { compileRoute } from '../outbound/router.ts';
import { callRetirement, retirementVerdict } from '../outbound/version-retirement.ts';
import type { ServiceVersion, VersionConfig } from '../outbound/versions.ts';
import { compileVersions, pinnedVersion } from '../outbound/versions.ts';
import { resolveServiceRef } from '../policy/kinds/route.ts';
import { documentApplies } from '../policy/selector.ts';
import type { DocumentOfKind } from '../policy/typed-documents.ts';
import { isKind } from '../policy/typed-documents.ts';
import type { PolicyDocument, WorkloadRef } from '../policy/types.ts';
import type { StageRefusal, TrailEntry } from './explain-stages.ts';

/*
 * The `version` stage of `policy explain`: what the caller's sidecar decides
 * before the call leaves it, at the instant asked for (--at). The caller's
 * Route for the destination (the one a sidecar of the --from workload would
 * hold) names the versions; a pinned version (x-meshgate-version) that is
 * unknown, retired or browned out is refused there, with the sidecar's own
 * code (src/outbound/version-retirement.ts). An un-pinned call is refused
 * only when every weighted backend of its route resolves to such a version.
 */

export function versionTrail(
  documents: readonly PolicyDocument[],
  ctx: CallContext,
  from: string | undefined,
  to: WorkloadRef,
  atMs: number,
): { entries: TrailEntry[]; refusal: StageRefusal | undefined } {
  const pinned = pinnedVersion(ctx.headers);
  const id = from === undefined ? undefined : parseSpiffeId(from);
  const routes = documents.filter((d): d is DocumentOfKind<'Route'> => isKind(d, 'Route') && sameService(resolveServiceRef(String(d.spec.service), d.metadata.namespace), to));
  if (!id) {
    if (routes.length === 0 && pinned === undefined) return { entries: [], refusal: undefined };
    return { entries: [{ stage: 'version', rule: '', matched: false, note: 'not evaluated (no --from with a mesh SPIFFE ID: whose Route applies is unknown)' }], refusal: undefined };
  }
  const caller: WorkloadRef = { service: id.serviceAccount, namespace: id.namespace };
  // As the sidecar merges them: the last Route for the destination wins.
  const doc = routes.filter((d) => documentApplies(d, caller)).at(-1);
  const rule = doc ? `${doc.metadata.namespace}/${doc.metadata.name}` : '';
  const declared = (doc?.spec.versions as VersionConfig[] | undefined) ?? [];
  const table = declared.length > 0 ? compileVersions(declared) : undefined;
  const destination = `${to.service}.${to.namespace}`;
  const at = new Date(atMs).toISOString();

  if (pinned !== undefined) {
    const version = table?.byName(pinned);
    if (!version) {
      const reason = `${destination} has no version of that name`;
      return { entries: [{ stage: 'version', rule, matched: false, decides: true, note: `route.unknown_version: ${reason}` }], refusal: { code: 'route.unknown_version', rule, reason } };
    }
    const verdict = retirementVerdict(destination, version, atMs);
    const versionRule = `${rule}#${version.name}`;
    if (verdict) return refused(versionRule, verdict);
    return { entries: [{ stage: 'version', rule: versionRule, matched: true, note: `answers at ${at}${upcoming(version, atMs)}` }], refusal: undefined };
  }
  if (!doc || !table?.anyRetiring) return { entries: [], refusal: undefined };
  return splitTrail(doc, table, ctx, destination, to, atMs);
}

/** An un-pinned call: the matched route's backends, each resolved to a retiring version or none. */
function splitTrail(
  doc: DocumentOfKind<'Route'>,
  table: NonNullable<ReturnType<typeof compileVersions>>,
  ctx: CallContext,
  destination: string,
  to: WorkloadRef,
  atMs: number,
): { entries: TrailEntry[]; refusal: StageRefusal | undefined } {
  const owner = { name: to.service, namespace: to.namespace };
  const rule = `${doc.metadata.namespace}/${doc.metadata.name}`;
  const route = (doc.spec.routes as RouteConfig[]).map((r, i) => compileRoute(r, i, owner)).find((r) => r.matches(ctx.method, ctx.path, ctx.query, ctx.headers));
  if (!route) return { entries: [], refusal: undefined };
  const weighted = route.backends.filter((b) => b.weight > 0);
  const entries: TrailEntry[] = [];
  const verdicts: RespondVerdict[] = [];
  for (const b of weighted) {
    const own = b.service === to.service && b.namespace === to.namespace;
    const refusal = own ? callRetirement(destination, table, undefined, b.subset, atMs) : undefined;
    const version = refusal?.version ?? (own ? table.retiringVersionsOf(b.subset)[0] : undefined);
    const verdict = refusal?.verdict;
    if (verdict) verdicts.push(verdict);
    if (version)
      entries.push({
        stage: 'version',
        rule: `${rule}#${version.name}`,
        matched: verdict !== undefined,
        note: `route ${route.name} backend (weight ${b.weight}): ${verdict ? `would get ${verdict.code}` : 'answers'}${upcoming(version, atMs)}`,
      });
  }
  if (weighted.length > 0 && verdicts.length === weighted.length) {
    const first = verdicts[0]!;
    entries[0] = { ...entries[0]!, decides: true, note: `${first.code}: ${first.reason}` };
    return { entries, refusal: { code: first.code, rule: entries[0]!.rule, reason: first.reason } };
  }
  return { entries, refusal: undefined };
}

function refused(rule: string, verdict: RespondVerdict): { entries: TrailEntry[]; refusal: StageRefusal } {
  return { entries: [{ stage: 'version', rule, matched: true, decides: true, note: `${verdict.code}: ${verdict.reason}` }], refusal: { code: verdict.code, rule, reason: verdict.reason } };
}

/** The next brown-out after `atMs`, so "it works today" does not hide next Tuesday. */
function upcoming(version: ServiceVersion, atMs: number): string {
  const r = version.retirement;
  if (!r || retirementAt(r, atMs)) return '';
  const next = r.windows.find((w) => w.startMs > atMs);
  return next ? `; next brown-out ${new Date(next.startMs).toISOString()} to ${new Date(next.endMs).toISOString()}` : '';
}

function sameService(a: { readonly name: string; readonly namespace: string }, b: WorkloadRef): boolean {
  return a.name === b.service && a.namespace === b.namespace;
}
