import type { IncomingHttpHeaders } from 'node:http';
import type { CallContext, RequestAuth } from '../core/call-context.ts';
import { systemClock } from '../core/clock.ts';
import type { Filter } from '../core/filter.ts';
import { normalizePath } from '../core/path-normalize.ts';
import type { RespondVerdict } from '../core/verdict.ts';
import type { AuthnRuntime } from '../filters/authn/authn-runtime.ts';
import { compileAuthorization } from '../filters/authz/authz-engine.ts';
import { authzRequestOf } from '../filters/authz/authz-request.ts';
import type { FilterDeps } from '../filters/filter-kind.ts';
import { createIPAccessFilter, createIPAccessRuntime } from '../filters/ip-access/ip-access-filter.ts';
import { buildInboundChain, createInboundRuntimes } from '../inbound/inbound-chain.ts';
import { selectDocuments } from '../policy/selector.ts';
import { isGrpcRequest } from '../proxy/headers.ts';
import type { TrailEntry, TrailStage } from './explain-stages.ts';
import { rateLimitTrail, validateTrail } from './explain-stages.ts';
import { versionTrail } from './explain-version.ts';

export type { TrailEntry } from './explain-stages.ts';

import type { PolicyDocument, WorkloadRef } from '../policy/types.ts';

/*
 * `meshgate policy explain`: one call description against a set of policy
 * documents, evaluated by the code the sidecar runs (the same filters and the
 * same authorization engine, src/inbound/inbound-chain.ts order: ip-access,
 * authn, authz, rate limit, validate; the last two in explain-stages.ts),
 * after the caller's Route versions at an instant (explain-version.ts), and
 * reported with the trail of rules that matched or not.
 * Pure apart from JWT verification against a `jwksUri` (fetched as the
 * sidecar would); no listener, no policy server.
 */

export interface ExplainCall {
  /** Peer SPIFFE ID (mTLS); undefined for a call without a verified certificate. */
  readonly from: string | undefined;
  readonly to: WorkloadRef;
  readonly method: string;
  /** The path as sent (normalized here as the sidecar does), optionally with a query string. */
  readonly path: string;
  /** Authority as sent; default `service.namespace`. */
  readonly authority?: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Source address: IP access is evaluated only when given. */
  readonly address?: string;
  /** Verified JWT claims, taken as is (no verification): `iss/sub` is the request principal. */
  readonly claims?: Readonly<Record<string, unknown>>;
  /** A JWT, sent as `authorization: Bearer` and verified by the authn filter. */
  readonly jwt?: string;
  /** gRPC call; default: content-type application/grpc among `headers`. */
  readonly grpc?: boolean;
}

export interface ExplainOptions {
  /** The sidecar's `authorization.allowWhenNoPolicy` (default false: deny by default). */
  readonly allowWhenNoPolicy?: boolean;
  /** For --jwt with a jwksUri; a fresh one by default. */
  readonly authnRuntime?: AuthnRuntime;
  /** Evaluate ValidationPolicy (default true). `policy diff` turns it off: the access log keeps no headers to check. */
  readonly validation?: boolean;
  /**
   * The instant the call is made, epoch milliseconds (default now): brown-out
   * windows, retired versions and token expiry are judged at it.
   */
  readonly at?: number;
  /** Evaluate the caller's Route versions (default true). `policy diff` replays inbound lines: their callers' sidecars already let them through. */
  readonly versions?: boolean;
}

export interface Explanation {
  readonly allow: boolean;
  /** Reason code of the refusal (authz.denied, ip.denied, authn.*, validate.*, request.invalid_path, route.version_*). */
  readonly code: string | undefined;
  /** The rule that decided, when one did. */
  readonly rule: string | undefined;
  readonly reason: string;
  /** The normalized path rules matched ('' when refused). */
  readonly path: string;
  readonly trail: readonly TrailEntry[];
}

/** `SERVICE[.NS]`; the namespace defaults to `default`. */
export function parseWorkload(text: string): WorkloadRef | undefined {
  const dot = text.indexOf('.');
  const service = dot < 0 ? text : text.slice(0, dot);
  const namespace = dot < 0 ? 'default' : text.slice(dot + 1);
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(service) || !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(namespace)) return undefined;
  return { service, namespace };
}

/** The request principal of claims as the authn filter forms it: `iss/sub`. */
function authOfClaims(claims: Readonly<Record<string, unknown>>): RequestAuth {
  const issuer = typeof claims.iss === 'string' ? claims.iss : '';
  const subject = typeof claims.sub === 'string' ? claims.sub : '';
  return { principal: `${issuer}/${subject}`, issuer, subject, claims };
}

/** A CallContext as src/proxy/call.ts createCallContext builds one, from a description. */
export function callContextOf(call: ExplainCall, path: string, query: string): CallContext {
  const headers: IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(call.headers ?? {})) headers[k.toLowerCase()] = v;
  if (call.jwt !== undefined) headers.authorization = `Bearer ${call.jwt}`;
  const authority = call.authority ?? `${call.to.service}.${call.to.namespace}`;
  headers.host ??= authority;
  const isGrpc = call.grpc ?? isGrpcRequest(headers);
  return {
    id: 'explain',
    direction: 'inbound',
    startedAt: 0,
    method: call.method.toUpperCase(),
    path,
    query,
    authority,
    headers,
    httpVersion: isGrpc ? '2' : '1.1',
    isGrpc,
    source: { address: call.address ?? '', port: 0, principal: call.from },
    destination: call.to,
    annotations: { retries: 0, ...(call.claims ? { auth: authOfClaims(call.claims) } : {}) },
  };
}

function docId(doc: PolicyDocument): string {
  return `${doc.metadata.namespace}/${doc.metadata.name}`;
}

/** What one stage of the chain concluded: entries for the trail, and the refusal when it refused. */
interface StageOutcome {
  readonly entries: readonly TrailEntry[];
  readonly refusal?: { readonly code: string; readonly rule: string | undefined; readonly reason: string };
  /** The authz stage's decision: the answer when no later stage refuses. */
  readonly decision?: { readonly allow: boolean; readonly rule: string | undefined; readonly reason: string };
}

interface StageInput {
  readonly filter: Filter;
  readonly ctx: CallContext;
  readonly call: ExplainCall;
  readonly selected: readonly PolicyDocument[];
  readonly opts: ExplainOptions;
  readonly deps: FilterDeps;
}

/** A stage of checks of your own: one trail line per document run, the deciding one marked. */
async function explainUserFilters({ filter, ctx, selected }: StageInput): Promise<StageOutcome> {
  const stage = filter.name.slice('user-filter:'.length);
  const shadowBefore = ctx.annotations.shadowDenials?.length ?? 0;
  const verdict = await filter.onRequest(ctx);
  const docs = selected
    .filter((d) => d.kind === 'Filter' && d.spec.stage === stage)
    .map(docId)
    .sort();
  const shadows = (ctx.annotations.shadowDenials ?? []).slice(shadowBefore);
  const edits = ctx.annotations.upstreamEdits;
  const entries: TrailEntry[] = [];
  for (const id of docs) {
    const decided = verdict.kind === 'respond' && (verdict.rule === id || verdict.rule?.startsWith(`${id}#`));
    const shadow = shadows.find((s) => s.startsWith(`${id}#`));
    if (decided) {
      entries.push({ stage: 'filter', rule: verdict.rule ?? id, matched: true, decides: true, note: `${verdict.code}: ${verdict.reason}` });
      break; // later checks of the stage do not run
    }
    entries.push({ stage: 'filter', rule: shadow ?? id, matched: shadow !== undefined, note: shadow ? 'shadow: would deny' : 'allowed' });
  }
  if (edits && verdict.kind === 'continue' && (edits.removeHeaders.length > 0 || Object.keys(edits.setHeaders).length > 0)) {
    const set = Object.entries(edits.setHeaders).map(([k, v]) => `${k}: ${v}`);
    entries.push({ stage: 'filter', rule: '', matched: true, note: `request to the app: ${[...set.map((s) => `set ${s}`), ...edits.removeHeaders.map((h) => `remove ${h}`)].join(', ')}` });
  }
  return { entries, ...(verdict.kind === 'respond' ? { refusal: fromVerdict(verdict) } : {}) };
}

function fromVerdict(verdict: RespondVerdict): StageOutcome['refusal'] {
  return { code: verdict.code, rule: verdict.rule, reason: verdict.reason };
}

/**
 * How each filter of the inbound chain is explained, by its name. The chain
 * itself (which filters, in which order) is the one the sidecar builds: a
 * filter added to it without a stage here makes explain fail loudly instead
 * of skipping it.
 */
const STAGES: Readonly<Record<string, (input: StageInput) => Promise<StageOutcome>>> = Object.freeze({
  async 'ip-access'({ filter, ctx, call, selected, deps }) {
    // Only when an address is given: without one, an allow list would refuse every description.
    if (call.address === undefined) return { entries: [{ stage: 'ip-access', rule: '', matched: false, note: 'not evaluated (no --ip)' }] };
    // Each document on its own for the trail; the chain's filter decides.
    const entries: TrailEntry[] = [];
    for (const doc of selected.filter((d) => d.kind === 'IPAccessPolicy')) {
      // A ban list of its own: the trail must not reconfigure the chain's.
      const verdict = await createIPAccessFilter([doc], createIPAccessRuntime(deps)).onRequest(ctx);
      const hit = verdict.kind === 'respond';
      entries.push({ stage: 'ip-access', rule: hit ? (verdict.rule ?? docId(doc)) : docId(doc), matched: hit, note: hit ? verdict.reason : `address ${call.address} passes` });
    }
    const verdict = await filter.onRequest(ctx);
    if (verdict.kind === 'continue') return { entries };
    markDecider(entries, 'ip-access', verdict.rule);
    return { entries, refusal: fromVerdict(verdict) };
  },

  async authn({ filter, ctx, call }) {
    // Claims are taken as verified; with neither claims nor a token there is no request principal to speak of.
    if (call.claims) return { entries: [{ stage: 'authn', rule: '', matched: false, note: `claims taken as verified: request principal ${ctx.annotations.auth!.principal}` }] };
    if (call.jwt === undefined) return { entries: [{ stage: 'authn', rule: '', matched: false, note: 'not evaluated (no --jwt or --claims): no request principal' }] };
    const verdict = await filter.onRequest(ctx);
    if (verdict.kind === 'respond') return { entries: [{ stage: 'authn', rule: verdict.rule ?? '', matched: true, decides: true, note: verdict.reason }], refusal: fromVerdict(verdict) };
    const auth = ctx.annotations.auth;
    return { entries: [{ stage: 'authn', rule: '', matched: auth !== undefined, note: auth ? `token verified: request principal ${auth.principal}` : 'token not verified by any rule (anonymous)' }] };
  },

  async authz({ filter, ctx, selected, opts }) {
    // The chain's filter decides; the engine it compiles, explained by its plain scan, gives the trail.
    const verdict = await filter.onRequest(ctx);
    const { decision, rules } = compileAuthorization(selected, { allowWhenNoPolicy: opts.allowWhenNoPolicy ?? false }).explain(authzRequestOf(ctx));
    const entries: TrailEntry[] = rules.map((rule) => ({ stage: 'authz', rule: rule.id, action: rule.action, mode: rule.mode, matched: rule.matched, decides: decision.rule?.id === rule.id }));
    if (!decision.rule) entries.push({ stage: 'authz', rule: '', matched: false, decides: true, note: decision.reason });
    for (const shadow of decision.shadowDenials) entries.push({ stage: 'authz', rule: shadow.id, matched: true, note: 'shadow: would deny' });
    if ((verdict.kind === 'continue') !== decision.allow) throw new Error('policy explain: the authorization trail disagrees with the authz filter');
    const outcome = { allow: decision.allow, rule: decision.rule?.id, reason: decision.reason };
    // The explanation quotes the engine's reason (which rule, or no ALLOW policy); the caller's reply says less.
    return { entries, decision: outcome, ...(verdict.kind === 'respond' ? { refusal: { code: verdict.code, rule: outcome.rule, reason: outcome.reason } } : {}) };
  },

  // Checks of your own run for real, in the sandbox, on the described call: their verdict is the one a sidecar would reach.
  'user-filter:after-authn': explainUserFilters,
  'user-filter:after-authz': explainUserFilters,
  'user-filter:before-validate': explainUserFilters,

  // Which buckets the call would take a token from: counts are live state, not in the policy, so never a refusal.
  async ratelimit({ ctx, selected }) {
    return { entries: rateLimitTrail(selected, ctx.method, ctx.path) };
  },

  // The head checks decide; the body is never described.
  async validate({ ctx, selected, opts }) {
    if (opts.validation === false) return { entries: [] };
    const { entries, refusal } = validateTrail(selected, ctx);
    return { entries, ...(refusal ? { refusal } : {}) };
  },
});

/**
 * Evaluates one call against `documents` (all of them: the ones that apply to
 * the destination workload are selected here, as the policy server does),
 * through the inbound chain the sidecar builds for them, stage by stage.
 */
export async function explainCall(documents: readonly PolicyDocument[], call: ExplainCall, opts: ExplainOptions = {}): Promise<Explanation> {
  const selected = selectDocuments(documents, call.to);
  const trail: TrailEntry[] = [];
  const q = call.path.indexOf('?');
  const rawPath = q < 0 ? call.path : call.path.slice(0, q);
  const normalized = normalizePath(rawPath);
  if (!normalized.ok) {
    trail.push({ stage: 'path', rule: '', matched: true, decides: true, note: `refused: ${normalized.reason}` });
    return { allow: false, code: 'request.invalid_path', rule: undefined, reason: normalized.reason, path: '', trail };
  }
  const path = normalized.path;
  if (path !== rawPath) trail.push({ stage: 'path', rule: '', matched: false, note: `normalized ${rawPath} -> ${path}` });
  const ctx = callContextOf(call, path, q < 0 ? '' : call.path.slice(q + 1));

  // The caller's sidecar decides first: a retired or browned-out version never reaches the destination's chain.
  const at = opts.at;
  if (opts.versions !== false) {
    const version = versionTrail(documents, ctx, call.from, call.to, at ?? systemClock.now());
    trail.push(...version.entries);
    // No Route for the destination names no rule: the default decided.
    if (version.refusal) return { allow: false, ...version.refusal, rule: version.refusal.rule || undefined, path, trail };
  }

  // An offline tool at the edge, like the CLI: the real clock (token expiry), or the instant asked for, and randomness (decision ids).
  const clock = at === undefined ? systemClock : { now: () => at, monotonic: systemClock.monotonic };
  const deps: FilterDeps = { clock, random: Math.random };
  const runtimes = createInboundRuntimes({ ...deps, allowWhenNoAuthzPolicy: opts.allowWhenNoPolicy ?? false });
  // Checks of your own are compiled before the chain is built, as a sidecar does when a snapshot arrives.
  await runtimes.userFilters.prepare(selected);
  try {
    return await runChain(buildInboundChain(selected, { onNoPolicy: 'deny', runtimes: opts.authnRuntime ? { ...runtimes, authn: opts.authnRuntime } : runtimes }), {
      ctx,
      call,
      selected,
      opts,
      deps,
      trail,
      path,
    });
  } finally {
    runtimes.userFilters.close();
  }
}

async function runChain(
  chain: readonly Filter[],
  { ctx, call, selected, opts, deps, trail, path }: Omit<StageInput, 'filter'> & { readonly trail: TrailEntry[]; readonly path: string },
): Promise<Explanation> {
  let decision: StageOutcome['decision'];
  for (const filter of chain) {
    const stage = STAGES[filter.name];
    if (!stage) throw new Error(`policy explain: no stage explains the inbound filter '${filter.name}'`);
    const outcome = await stage({ filter, ctx, call, selected, opts, deps });
    decision = outcome.decision ?? decision;
    if (outcome.refusal) {
      // One decider per explanation: a stage after authz that refuses takes it over from the allowing rule.
      const earlier = outcome.decision ? trail : trail.map((t) => (t.stage === 'authz' && t.decides ? { ...t, decides: false } : t));
      return { allow: false, ...outcome.refusal, path, trail: [...earlier, ...outcome.entries] };
    }
    trail.push(...outcome.entries);
  }
  if (!decision) throw new Error('policy explain: the inbound chain has no authorization stage');
  return { allow: decision.allow, code: decision.allow ? undefined : 'authz.denied', rule: decision.rule, reason: decision.reason, path, trail };
}

function markDecider(trail: TrailEntry[], stage: TrailStage, rule: string | undefined): void {
  const index = trail.findIndex((t) => t.stage === stage && t.matched && (rule === undefined || t.rule === rule));
  if (index >= 0) trail[index] = { ...trail[index]!, decides: true };
}

/** The first line of `policy explain`: `ALLOW` or `DENY (code) by rule`. */
export function verdictLine(e: Explanation): string {
  if (e.allow) return 'ALLOW';
  return `DENY (${e.code}) by ${e.rule ?? `default: ${e.reason}`}`;
}

/** One trail line per entry, as `policy explain` prints them. */
export function formatTrail(trail: readonly TrailEntry[]): string[] {
  return trail.map((t) => {
    const parts = [`  ${t.stage.padEnd(9)}`];
    if (t.action) parts.push(`${t.action.padEnd(5)} ${(t.mode ?? '').padEnd(7)}`);
    if (t.rule) parts.push(t.rule);
    if (t.action || (t.rule && !t.note)) parts.push(t.matched ? 'matched' : 'no match');
    if (t.note) parts.push(t.note);
    if (t.decides) parts.push('<- decides');
    return parts.join(' ');
  });
}
