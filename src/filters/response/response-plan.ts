import type { CallContext, ResponsePlanHandle } from '../../core/call-context.ts';
import type { Filter } from '../../core/filter.ts';
import { CONTINUE } from '../../core/verdict.ts';
import type { CallMatch } from '../../policy/call-match.ts';
import { compileCallMatch, matchPathOf } from '../../policy/call-match.ts';
import type { RouteResponseRule } from '../../policy/kinds/route-responses.ts';
import { DEFAULT_STRIPPED_HEADERS } from '../../policy/kinds/route-responses.ts';
import { isRouteDestination } from '../../policy/selector.ts';
import type { PolicyDocument, WorkloadRef } from '../../policy/types.ts';
import type { FilterDeps } from '../filter-kind.ts';
import type { ResponseCacheStore } from './cache-store.ts';
import { createResponseCacheStore } from './cache-store.ts';

/*
 * The response filter: the last of the inbound chain, it only marks a call
 * that a Route `responses` rule of this workload matches with that rule's
 * plan (call.annotations.responsePlan); the inbound stack then serves it from
 * the cache or relays the app's answer through the plan (response-serve.ts).
 * A snapshot without such a rule adds no filter to the chain at all, and a
 * call no rule matches gets no plan: both cost nothing on the response path.
 */

type CacheLookupResult = 'hit' | 'miss' | 'bypass';

/** The counters the cache feeds (SidecarMetrics has them); `rule` comes from policy documents only. */
export interface ResponseCacheEvents {
  lookup(rule: string, result: CacheLookupResult, reason: string): void;
  store(rule: string, result: 'stored' | 'skipped', reason: string): void;
  evicted(): void;
  /** The cache's size in bytes after it changed. */
  resized(bytes: number): void;
}

export interface ResponseRuntimeDeps extends FilterDeps {
  /** The workload whose responses these are: Route `responses` of other services do not apply. Undefined: none apply. */
  readonly workload: WorkloadRef | undefined;
  /** limits.maxResponseCache: bytes of every cached response together; 0 turns caching off. */
  readonly maxCacheBytes: number;
  readonly events?: ResponseCacheEvents;
}

/** What outlives every snapshot: the cache, created once per sidecar. */
export interface ResponseRuntime {
  readonly workload: WorkloadRef | undefined;
  readonly clock: FilterDeps['clock'];
  /** Undefined when limits.maxResponseCache is 0. */
  readonly store: ResponseCacheStore | undefined;
  readonly events: ResponseCacheEvents | undefined;
  /**
   * Bytes of answers being copied for the cache right now, by every call:
   * at most limits.maxResponseCache together, so many concurrent misses
   * cannot hold more than the cache itself (a copy past it is dropped).
   */
  readonly copies: { bytes: number; readonly max: number };
}

export function createResponseRuntime(deps: ResponseRuntimeDeps): ResponseRuntime {
  const events = deps.events;
  return {
    workload: deps.workload,
    clock: deps.clock,
    store: deps.maxCacheBytes > 0 ? createResponseCacheStore({ maxBytes: deps.maxCacheBytes, clock: deps.clock, onEvict: events && (() => events.evicted()) }) : undefined,
    events,
    copies: { bytes: 0, max: deps.maxCacheBytes },
  };
}

interface CachePlan {
  readonly maxEntryBytes: number;
  readonly cacheAuthenticated: boolean;
}

export interface HardeningPlan {
  /** Lower-case names removed from the app's response: the defaults and the rule's. */
  readonly strip: readonly string[];
  readonly maxResponseBytes: number | undefined;
  /** Lower-case name and value pairs. */
  readonly securityHeaders: readonly (readonly [string, string])[];
  readonly override: boolean;
}

export interface ResponsePlan extends ResponsePlanHandle {
  readonly cache: CachePlan | undefined;
  readonly hardening: HardeningPlan | undefined;
  readonly runtime: ResponseRuntime;
}

/** The plan the response filter put on a call, if any. */
export function responsePlanOf(call: CallContext): ResponsePlan | undefined {
  return call.annotations.responsePlan as ResponsePlan | undefined;
}

interface CompiledRule {
  readonly match: CallMatch;
  readonly plan: ResponsePlan;
}

function compilePlan(rule: RouteResponseRule, id: string, runtime: ResponseRuntime): ResponsePlan {
  const h = rule.hardening;
  return Object.freeze({
    rule: id,
    cache: rule.cache && Object.freeze({ maxEntryBytes: rule.cache.maxEntryBytes, cacheAuthenticated: rule.cache.cacheAuthenticated }),
    hardening:
      h &&
      Object.freeze({
        strip: Object.freeze([...new Set([...DEFAULT_STRIPPED_HEADERS, ...h.stripHeaders])]),
        maxResponseBytes: h.maxResponseBytes,
        securityHeaders: Object.freeze(Object.entries(h.securityHeaders).map(([name, value]) => Object.freeze([name.toLowerCase(), value] as const))),
        override: h.overrideSecurityHeaders,
      }),
    runtime,
  });
}

/** The filter of a snapshot, or undefined when no Route of it has `responses` for this workload (then the chain has no such filter). */
export function compileResponseFilter(documents: readonly PolicyDocument[], runtime: ResponseRuntime): Filter | undefined {
  const workload = runtime.workload;
  if (workload === undefined) return undefined;
  const rules: CompiledRule[] = [];
  for (const doc of documents) {
    if (doc.kind !== 'Route' || !isRouteDestination(doc, workload)) continue;
    const responses = doc.spec.responses as readonly RouteResponseRule[] | undefined;
    for (const rule of responses ?? []) {
      rules.push({ match: compileCallMatch(rule.match), plan: compilePlan(rule, `${doc.metadata.namespace}/${doc.metadata.name}#${rule.name}`, runtime) });
    }
  }
  if (rules.length === 0) return undefined;
  return {
    name: 'response',
    onRequest(call) {
      const path = matchPathOf(call.path);
      for (const rule of rules) {
        if (!rule.match(call.method, path)) continue;
        call.annotations.responsePlan = rule.plan;
        break;
      }
      return CONTINUE;
    },
  };
}
