import type { IncomingHttpHeaders } from 'node:http';
import type { CallContext, RequestAuth } from '../core/call-context.ts';
import { systemClock } from '../core/clock.ts';
import type { Filter } from '../core/filter.ts';
import type { RespondVerdict } from '../core/verdict.ts';
import { createAuthnFilter } from '../filters/authn/authn-filter.ts';
import { createAuthnRuntime } from '../filters/authn/authn-runtime.ts';
import type { AuthnRuntime } from '../filters/authn/authn-runtime.ts';
import { compileAuthorization } from '../filters/authz/authz-engine.ts';
import { authzRequestOf } from '../filters/authz/authz-request.ts';
import { createIPAccessFilter } from '../filters/ip-access/ip-access-filter.ts';
import { isGrpcRequest } from '../proxy/headers.ts';
import { normalizePath } from '../proxy/path-normalize.ts';
import { selectDocuments } from './selector.ts';
import { rateLimitTrail, validateTrail } from './explain-stages.ts';
import type { PolicyDocument, WorkloadRef } from './types.ts';

/*
 * `meshgate policy explain`: one call description against a set of policy
 * documents, evaluated by the code the sidecar runs (the same filters and the
 * same authorization engine, src/inbound/inbound-chain.ts order: ip-access,
 * authn, authz, rate limit, validate; the last two in explain-stages.ts) and
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
}

export type TrailStage = 'path' | 'ip-access' | 'authn' | 'authz' | 'ratelimit' | 'validate';

export interface TrailEntry {
  readonly stage: TrailStage;
  /** `namespace/policy#rule`, `namespace/policy` for a whole document, or '' for a stage note. */
  readonly rule: string;
  /** ALLOW, DENY, AUDIT for authz rules. */
  readonly action?: string;
  readonly mode?: string;
  readonly matched: boolean;
  /** This entry decided the outcome. */
  readonly decides?: boolean;
  readonly note?: string;
}

export interface Explanation {
  readonly allow: boolean;
  /** Reason code of the refusal (authz.denied, ip.denied, authn.*, validate.*, request.invalid_path). */
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
export function authOfClaims(claims: Readonly<Record<string, unknown>>): RequestAuth {
  const issuer = typeof claims.iss === 'string' ? claims.iss : '';
  const subject = typeof claims.sub === 'string' ? claims.sub : '';
  return { principal: `${issuer}/${subject}`, issuer, subject, claims };
}

/** A CallContext as src/proxy/call.ts createCallContext builds one, from a description. */
function callContextOf(call: ExplainCall, path: string, query: string): CallContext {
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

function refused(verdict: RespondVerdict, path: string, trail: TrailEntry[]): Explanation {
  return { allow: false, code: verdict.code, rule: verdict.rule, reason: verdict.reason, path, trail };
}

/**
 * Evaluates one call against `documents` (all of them: the ones that apply to
 * the destination workload are selected here, as the policy server does).
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

  // 1. IP access, only when an address is given: each document on its own for the trail, then the filter as the sidecar builds it.
  if (call.address !== undefined) {
    const ipDocs = selected.filter((d) => d.kind === 'IPAccessPolicy');
    for (const doc of ipDocs) {
      const verdict = await createIPAccessFilter([doc]).onRequest(ctx);
      trail.push({ stage: 'ip-access', rule: verdict.kind === 'respond' ? (verdict.rule ?? docId(doc)) : docId(doc), matched: verdict.kind === 'respond', note: verdict.kind === 'respond' ? verdict.reason : `address ${call.address} passes` });
    }
    const verdict = await createIPAccessFilter(selected).onRequest(ctx);
    if (verdict.kind === 'respond') {
      markDecider(trail, 'ip-access', verdict.rule);
      return refused(verdict, path, trail);
    }
  } else {
    trail.push({ stage: 'ip-access', rule: '', matched: false, note: 'not evaluated (no --ip)' });
  }

  // 2. Authentication: claims taken as verified, or the token through the authn filter.
  if (call.claims) {
    trail.push({ stage: 'authn', rule: '', matched: false, note: `claims taken as verified: request principal ${ctx.annotations.auth!.principal}` });
  } else if (call.jwt !== undefined) {
    const runtime = opts.authnRuntime ?? createAuthnRuntime({ clock: systemClock });
    const filter: Filter = createAuthnFilter(selected, runtime);
    const verdict = await filter.onRequest(ctx);
    if (verdict.kind === 'respond') {
      trail.push({ stage: 'authn', rule: verdict.rule ?? '', matched: true, decides: true, note: verdict.reason });
      return refused(verdict, path, trail);
    }
    const auth = ctx.annotations.auth;
    trail.push({ stage: 'authn', rule: '', matched: auth !== undefined, note: auth ? `token verified: request principal ${auth.principal}` : 'token not verified by any rule (anonymous)' });
  } else {
    trail.push({ stage: 'authn', rule: '', matched: false, note: 'not evaluated (no --jwt or --claims): no request principal' });
  }

  // 3. Authorization: the engine the authz filter compiles, explained by its plain scan.
  const engine = compileAuthorization(selected, { allowWhenNoPolicy: opts.allowWhenNoPolicy ?? false });
  const { decision, rules } = engine.explain(authzRequestOf(ctx));
  for (const rule of rules) {
    trail.push({ stage: 'authz', rule: rule.id, action: rule.action, mode: rule.mode, matched: rule.matched, decides: decision.rule?.id === rule.id });
  }
  if (!decision.rule) trail.push({ stage: 'authz', rule: '', matched: false, decides: true, note: decision.reason });
  for (const shadow of decision.shadowDenials) trail.push({ stage: 'authz', rule: shadow.id, matched: true, note: 'shadow: would deny' });
  // 4. Rate limits: which buckets the call would take a token from (counts are live state, not in the policy).
  if (decision.allow) trail.push(...rateLimitTrail(selected, ctx.method, path));
  // 5. Validation, last as in the chain: the head checks decide; the body is not described.
  if (decision.allow && opts.validation !== false) {
    const { entries, refusal } = validateTrail(selected, ctx);
    if (refusal) {
      // One decider per explanation: the authz rule let the call through, validation refused it.
      const demoted = trail.map((t) => (t.stage === 'authz' && t.decides ? { ...t, decides: false } : t));
      return { allow: false, code: refusal.code, rule: refusal.rule, reason: refusal.reason, path, trail: [...demoted, ...entries] };
    }
    trail.push(...entries);
  }
  return {
    allow: decision.allow,
    code: decision.allow ? undefined : 'authz.denied',
    rule: decision.rule?.id,
    reason: decision.reason,
    path,
    trail,
  };
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
