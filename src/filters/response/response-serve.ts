import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { CallContext } from '../../core/call-context.ts';
import type { ReasonCode } from '../../core/reason-codes.ts';
import type { DownstreamResponse } from '../../proxy/downstream.ts';
import type { ResponseTap } from '../../proxy/upstream-call.ts';
import { requestDecision, storeDecision } from './cache-policy.ts';
import type { CachedResponse } from './cache-store.ts';
import type { HardeningPlan, ResponsePlan } from './response-plan.ts';

/*
 * What the inbound stack does with a call that has a response plan
 * (response-plan.ts), after the filter chain let it through: answer it from
 * the cache, or relay the app's answer through a tap that caps its size and
 * keeps a copy when it may be cached; and harden the headers either way.
 */

/** Where a cacheable call's answer would be stored: its key and whether a lookup was allowed. */
export interface CacheSlot {
  readonly key: string;
}

export type CacheOutcome =
  | { readonly kind: 'hit'; readonly response: CachedResponse; readonly ageSeconds: number }
  /** `slot`: the answer may be stored there. */
  | { readonly kind: 'miss'; readonly slot: CacheSlot | undefined };

const NO_SLOT: CacheOutcome = Object.freeze({ kind: 'miss', slot: undefined });

/**
 * Looks the call up (RFC 9111 request rules, the caller's credentials),
 * counting the lookup and noting it for the access log (`cache`).
 * `appPath`: the path and query the app would receive.
 */
export function lookupCache(plan: ResponsePlan, call: CallContext, appPath: string): CacheOutcome {
  const cache = plan.cache;
  const { store, events } = plan.runtime;
  if (cache === undefined) return NO_SLOT;
  const bypass = (reason: string, slot: CacheSlot | undefined = undefined): CacheOutcome => {
    call.annotations.cache = `bypass:${reason}`;
    events?.lookup(plan.rule, 'bypass', reason);
    return slot ? { kind: 'miss', slot } : NO_SLOT;
  };
  if (store === undefined) return bypass('disabled');
  const decision = requestDecision(call.method, call.headers);
  if (decision.kind === 'bypass') return bypass(decision.reason);
  const caller = callerKey(call);
  // Fail closed: an answer to a call with credentials is never shared, unless the route keys it by caller.
  if (caller !== undefined && !cache.cacheAuthenticated) return bypass('authenticated');
  // The mesh peer too: an app that answers by x-forwarded-client-cert has no Vary to say so.
  const key = `${call.source.principal ?? ''}\n${caller ?? ''}\n${call.authority.toLowerCase()}\n${appPath}`;
  const slot: CacheSlot = { key };
  if (decision.kind === 'refresh') return bypass(decision.reason, slot);
  const found = store.get(key, call.headers);
  if (found) {
    call.annotations.cache = 'hit';
    events?.lookup(plan.rule, 'hit', '');
    return { kind: 'hit', response: found.response, ageSeconds: found.ageSeconds };
  }
  call.annotations.cache = 'miss';
  events?.lookup(plan.rule, 'miss', '');
  events?.resized(store.bytes()); // a stale entry may have gone
  return { kind: 'miss', slot };
}

/**
 * Who is calling, when the call carries credentials: the verified request
 * principal, else a digest of the credential fields (never the credential
 * itself, which would then sit in memory for the entry's life). Cookies count:
 * a session cookie is a credential to the app.
 */
function callerKey(call: CallContext): string | undefined {
  const { authorization, cookie } = call.headers;
  const principal = call.annotations.auth?.principal;
  if (authorization === undefined && cookie === undefined && principal === undefined) return undefined;
  // node:crypto from here, not imported: a sidecar whose calls never reach this loads no OpenSSL (~0.8 MiB RSS).
  const digest = process
    .getBuiltinModule('node:crypto')
    .createHash('sha256')
    .update(String(authorization ?? ''))
    .update('\u0000')
    .update(Array.isArray(cookie) ? cookie.join('; ') : String(cookie ?? ''))
    .digest('base64url');
  return principal === undefined ? `credential:${digest}` : `principal:${principal}`;
}

/**
 * Writes a cached answer: its head with Age (RFC 9111 §5.1) and `mutate`'s
 * per-call changes (hardening, the filters' response headers), and its body
 * unless the call is a HEAD. Returns the body bytes sent.
 */
export function writeCached(downstream: DownstreamResponse, call: CallContext, hit: { response: CachedResponse; ageSeconds: number }, mutate: (out: OutgoingHttpHeaders) => void): number {
  const res = downstream as unknown as ServerResponse;
  const out: OutgoingHttpHeaders = { ...hit.response.headers, age: String(hit.ageSeconds) };
  out['content-length'] = String(hit.response.body.length);
  mutate(out);
  const body = call.method === 'HEAD' ? undefined : hit.response.body;
  try {
    res.writeHead(hit.response.status, out as Record<string, string | string[]>);
    res.end(body);
  } catch {
    // The caller's stream is gone (an HTTP/2 reset while the checks ran): nothing to answer.
    res.destroy();
    return 0;
  }
  return body?.length ?? 0;
}

/** Statuses that never have a body (RFC 9110 §6.4.1). */
const NO_BODY = (status: number): boolean => status === 204 || status === 304 || (status >= 100 && status < 200);

/**
 * The relay's tap for a call with a plan: the size cap (Content-Length up
 * front, then counted as it streams) and, when `slot` is set, a copy of the
 * answer stored at its end if RFC 9111 lets a shared cache keep it. The copy
 * holds at most the rule's maxEntryBytes, and all calls' copies together at
 * most limits.maxResponseCache: past either it is dropped and the rest only
 * streams through. Undefined when there is nothing to watch.
 */
export function createResponseTap(plan: ResponsePlan, call: CallContext, slot: CacheSlot | undefined): ResponseTap | undefined {
  const cap = plan.hardening?.maxResponseBytes;
  if (cap === undefined && slot === undefined) return undefined;
  const { runtime } = plan;
  const skipped = (reason: string): undefined => {
    runtime.events?.store(plan.rule, 'skipped', reason);
    return undefined;
  };
  let relayed = 0;
  let copy: { chunks: Buffer[]; bytes: number; status: number; headers: OutgoingHttpHeaders; lifetimeMs: number; initialAgeMs: number; storedAt: number; vary: readonly string[] } | undefined;
  const isHead = call.method === 'HEAD';
  const copies = runtime.copies;
  /** Gives the copy's bytes back to the runtime's budget (they are in the store now, or gone). */
  const drop = (): void => {
    if (copy === undefined) return;
    copies.bytes -= copy.bytes;
    copy = undefined;
  };
  return {
    head(status, headers): ReasonCode<'data'> | undefined {
      const declared = headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
      if (cap !== undefined && !isHead && !NO_BODY(status) && declared !== undefined && declared > cap) return 'response.too_large';
      if (slot === undefined || plan.cache === undefined || runtime.store === undefined) return undefined;
      // A HEAD's answer has no body to serve a GET with; the GET's entry answers later HEADs.
      if (isHead) return skipped('head');
      const now = runtime.clock.now();
      const decision = storeDecision(status, headers, now);
      if (decision.kind === 'skip') return skipped(decision.reason);
      if (declared !== undefined && declared > plan.cache.maxEntryBytes) return skipped('too_large');
      const kept: OutgoingHttpHeaders = { ...headers };
      delete kept.age; // the cache says its own Age on every hit
      copy = { chunks: [], bytes: 0, status, headers: kept, lifetimeMs: decision.lifetimeMs, initialAgeMs: decision.initialAgeMs, storedAt: now, vary: decision.vary };
      return undefined;
    },
    data(chunk): ReasonCode<'data'> | undefined {
      relayed += chunk.length;
      if (cap !== undefined && relayed > cap) return 'response.too_large'; // the relay ends the call: end('failed') drops the copy
      if (copy !== undefined) {
        if (copy.bytes + chunk.length > plan.cache!.maxEntryBytes) {
          drop();
          skipped('too_large');
        } else if (copies.bytes + chunk.length > copies.max) {
          drop();
          skipped('copy_budget');
        } else {
          copy.bytes += chunk.length;
          copies.bytes += chunk.length;
          copy.chunks.push(chunk);
        }
      }
      return undefined;
    },
    end(how) {
      if (copy === undefined || slot === undefined) return;
      const kept = copy;
      drop();
      if (how === 'failed') return;
      if (how === 'trailers') return skipped('trailers');
      const body = Buffer.concat(kept.chunks, kept.bytes);
      const response: CachedResponse = { status: kept.status, headers: kept.headers, body, storedAt: kept.storedAt, initialAgeMs: kept.initialAgeMs, lifetimeMs: kept.lifetimeMs };
      const store = runtime.store!;
      if (store.put(slot.key, kept.vary, call.headers, response)) runtime.events?.store(plan.rule, 'stored', '');
      else skipped('too_large');
      runtime.events?.resized(store.bytes());
    },
  };
}

/** Hardening's header changes: revealing headers out, the route's security headers in (unless the app set them, or override). */
export function hardenHeaders(out: OutgoingHttpHeaders, h: HardeningPlan): void {
  for (const name of h.strip) delete out[name];
  for (const [name, value] of h.securityHeaders) if (h.override || out[name] === undefined) out[name] = value;
}
