import type { CallContext } from '../core/call-context.ts';
import type { Filter } from '../core/filter.ts';
import { runFilters } from '../core/filter.ts';
import type { RespondVerdict, Verdict } from '../core/verdict.ts';
import { respond } from '../core/verdict.ts';
import { responsePlanOf } from '../filters/response/response-plan.ts';
import { createResponseTap, hardenHeaders, lookupCache, writeCached } from '../filters/response/response-serve.ts';
import type { BodyBudget } from '../proxy/body-budget.ts';
import { createCallContext, pathWithQuery, readRequestTarget } from '../proxy/call.ts';
import type { CallRecording, CallTelemetry } from '../proxy/call-telemetry.ts';
import { beginCall, propagateTrace, recordCall, rejectMalformed, replyDenied, replyError } from '../proxy/call-telemetry.ts';
import { forward } from '../proxy/forward.ts';
import { mutateHeaders, upstreamRequestHeaders } from '../proxy/headers.ts';
import type { DownstreamRequest, DownstreamResponse, RequestHandler } from '../proxy/listener.ts';
import type { ForwardableBody } from '../proxy/request-body.ts';
import { createRequestBody } from '../proxy/request-body.ts';
import { createRequestIds } from '../proxy/request-ids.ts';
import { ROUTE_HEADER } from '../proxy/route-header.ts';
import type { ForwardOutcome, ResponseTap, UpstreamTarget } from '../proxy/upstream-call.ts';
import type { UpstreamPool } from '../proxy/upstream-pool.ts';
import type { AppH2cProbe } from './app-h2c-probe.ts';

/** Envoy's header for the verified caller identity; apps and tools already read it. */
const XFCC = 'x-forwarded-client-cert';
/**
 * Never passed from the caller to the app: who called (only this sidecar may say, in XFCC) and the
 * caller's route (for this sidecar's checks, the call view).
 */
const NOT_FROM_CALLER: ReadonlySet<string> = new Set([XFCC, ROUTE_HEADER]);

export interface InboundStackDeps {
  readonly workload: { readonly service: string; readonly namespace: string };
  /** This workload's SPIFFE ID, when it has one. */
  readonly ownPrincipal: string | undefined;
  readonly app: UpstreamPool;
  readonly appProtocol: 'auto' | 'http1' | 'http2';
  /** With `auto`: whether the app speaks h2c, so HTTP/2 callers of an HTTP/1.1-only app are sent HTTP/1.1. */
  readonly appH2c?: AppH2cProbe;
  /**
   * Callers outside the mesh choose HTTP/2 on their own (browsers do over TLS),
   * so on the edge `auto` keeps HTTP/2 to the app only for gRPC. In the mesh the
   * calling sidecar mirrors its app's protocol, so HTTP/2 there means the app spoke it.
   */
  readonly edge: boolean;
  readonly appTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** The filter chain of the current policy snapshot, in the order of ARCHITECTURE.md. */
  readonly filters: () => readonly Filter[];
  /** Verified SPIFFE ID of the peer; undefined until mTLS lands on this listener. */
  readonly peerPrincipal: (req: DownstreamRequest) => string | undefined;
  readonly telemetry: CallTelemetry;
  /** Bytes of request bodies all calls may hold while filters read them (limits.maxBufferedBodies); unbounded without. */
  readonly bodyBudget?: BodyBudget;
  /**
   * Told of every call the chain refused (not of upstream failures), after the
   * reply is sent: the auto-ban list counts them (src/filters/ip-access/ban-list.ts).
   * Must not throw.
   */
  readonly onRefused?: (call: CallContext, verdict: RespondVerdict) => void;
  /** With interception: the app port a captured call was for (src/interception/); `app` when undefined. */
  readonly appFor?: (req: DownstreamRequest) => UpstreamPool | undefined;
}

/**
 * The inbound data path, one step per line:
 *   listener -> peer identity -> CallContext -> filter chain -> local app -> telemetry
 */
export function createInboundStack(deps: InboundStackDeps): RequestHandler {
  const { telemetry } = deps;
  const destinationLabel = `${deps.workload.service}.${deps.workload.namespace}`;
  const newRequestId = createRequestIds();
  return (req, res) => {
    const startedAt = telemetry.clock.monotonic();
    const target = readRequestTarget(req); // codec: method, path, authority
    if ('code' in target) return rejectMalformed('inbound', req, res, target, telemetry); // 400: malformed, or a path refused by normalization
    // Read only if a filter needs it (validate), within the sidecar's memory budget; otherwise streamed untouched.
    const body = createRequestBody(req, deps.bodyBudget, res);
    const call = createCallContext(req, target, {
      direction: 'inbound',
      startedAt,
      destination: deps.workload,
      principal: deps.peerPrincipal(req), // TLS identity, verified by the listener
      body,
      newRequestId,
    });
    const recording = beginCall(telemetry, call, req, destinationLabel); // server span (parent: the caller's trace context), bytes in
    const app = deps.appFor?.(req) ?? deps.app;
    const filters = deps.filters();
    const verdict = runFilters(filters, call); // ip-access -> authn -> authz -> rate-limit -> validate
    if (verdict instanceof Promise) {
      const stopWatching = mayQueue(filters) ? watchCallerLeaving(call, res) : undefined;
      verdict.then(
        (v) => {
          stopWatching?.();
          afterFilters(v, call, body, res, deps, recording, app);
        },
        () => {
          stopWatching?.();
          afterFilters(respond('filter.error', 'a policy check failed'), call, body, res, deps, recording, app);
        },
      );
    } else {
      afterFilters(verdict, call, body, res, deps, recording, app);
    }
  };
}

function mayQueue(filters: readonly Filter[]): boolean {
  for (let i = 0; i < filters.length; i++) if (filters[i]!.queues) return true;
  return false;
}

/** A filter may hold the call in a queue (throttle, concurrency limits): a caller that leaves meanwhile leaves it. */
function watchCallerLeaving(call: CallContext, res: DownstreamResponse): () => void {
  const gone = (): void => {
    call.annotations.callerGone = true;
    call.annotations.onCallerGone?.();
  };
  res.once('close', gone);
  return () => res.off('close', gone);
}

function afterFilters(verdict: Verdict, call: CallContext, body: ForwardableBody, res: DownstreamResponse, deps: InboundStackDeps, recording: CallRecording, app: UpstreamPool): void {
  if (verdict.kind === 'respond') {
    replyDenied(deps.telemetry, call, res, verdict, recording);
    deps.onRefused?.(call, verdict);
    return;
  }
  // A Route `responses` rule covers the call (none: no plan, nothing more done here).
  const plan = responsePlanOf(call);
  let tap: ResponseTap | undefined;
  if (plan !== undefined) {
    const cached = lookupCache(plan, call, appPathOf(call));
    if (cached.kind === 'hit') {
      const bytesOut = writeCached(res, call, cached, (out) => mutateAppResponse(call, out));
      recordCall(deps.telemetry, call, { status: res.statusCode, reason: undefined, bytesOut }, recording);
      return;
    }
    tap = createResponseTap(plan, call, cached.slot);
  }
  const protocol = deps.appProtocol !== 'auto' ? deps.appProtocol : call.httpVersion === '2' && (call.isGrpc || !deps.edge) ? 'http2' : 'http1';
  // auto, an HTTP/2 caller, not gRPC: mirror it only if the app speaks h2c (asked once, then cached).
  const h2c = protocol === 'http2' && deps.appProtocol === 'auto' && !call.isGrpc ? deps.appH2c?.speaksH2c() : undefined;
  if (h2c instanceof Promise) {
    h2c.then((speaks) => forwardToApp(speaks ? 'http2' : 'http1', call, body, res, deps, recording, app, tap));
    return;
  }
  forwardToApp(h2c === false ? 'http1' : protocol, call, body, res, deps, recording, app, tap);
}

function forwardToApp(
  protocol: 'http1' | 'http2',
  call: CallContext,
  body: ForwardableBody,
  res: DownstreamResponse,
  deps: InboundStackDeps,
  recording: CallRecording,
  pool: UpstreamPool,
  tap: ResponseTap | undefined,
): void {
  const app: UpstreamTarget = { dispatcher: pool.dispatcher(protocol), label: pool.origin, done: () => {} };
  let picked = false;
  const edits = call.annotations.upstreamEdits; // e.g. authn: credential stripped, verified claims set
  // Left out while copying rather than deleted afterwards (headers.ts says why): what the edits remove, and
  // what the app never gets from the caller.
  const headers = upstreamRequestHeaders(call.headers, { clientAddress: call.source.address, proto: 'http', requestId: call.id, authority: call.authority }, NOT_FROM_CALLER, edits?.removeHeaders);
  if (edits) {
    // Its removals are no-ops now, but for a header this sidecar writes itself (as before); its settings
    // cannot say who called or which route was taken either.
    mutateHeaders(headers, { remove: edits.removeHeaders, set: edits.setHeaders, add: {} });
    for (const name of NOT_FROM_CALLER) if (headers[name] !== undefined) delete headers[name];
  }
  if (call.source.principal) headers[XFCC] = `By=${deps.ownPrincipal ?? ''};URI=${call.source.principal}`;
  propagateTrace(deps.telemetry, recording, headers); // the app's spans become children of the server span
  forward(
    {
      method: call.method,
      path: appPathOf(call),
      headers,
      body: body.forwardable(), // the bytes a filter buffered, then the rest; the live stream when none did
      timeoutMs: deps.appTimeoutMs,
      bodyTimeoutMs: call.isGrpc ? 0 : deps.idleTimeoutMs,
      retry: undefined, // the app is local: a retry would only hide its failure
      pick: () => (picked ? undefined : ((picked = true), app)),
      mutateResponseHeaders: (out) => mutateAppResponse(call, out),
      responseTap: tap,
    },
    res,
    replyError(call, res),
  ).then((outcome: ForwardOutcome) => {
    call.annotations.upstream = outcome.upstream;
    recordCall(deps.telemetry, call, outcome, recording);
  });
}

/** The path and query the app receives: a filter may have rewritten the query (authn took a token out). */
function appPathOf(call: CallContext): string {
  const query = call.annotations.upstreamEdits?.query;
  return query === undefined ? pathWithQuery(call) : query === '' ? call.path : `${call.path}?${query}`;
}

/** The sidecar's changes to the app's response head, relayed or served from the cache. */
function mutateAppResponse(call: CallContext, out: Record<string, string | string[] | number | undefined>): void {
  // Only this sidecar's own replies carry a reason code: callers' sidecars trust it to tell a
  // policy refusal from an endpoint failure (src/outbound/peer-answers.ts), so an app cannot say one.
  delete out['x-meshgate-reason'];
  const added = call.annotations.responseHeaders; // e.g. RateLimit fields of an admitted call
  if (added) for (const [name, value] of Object.entries(added)) out[name] = appendField(out[name], value);
  const hardening = responsePlanOf(call)?.hardening; // a Route responses[].hardening rule covers the call
  if (hardening) hardenHeaders(out, hardening);
}

/** A list field's members after the app's own (RFC 9110 §5.3: one field line per value). */
function appendField(existing: string | number | string[] | undefined, value: string): string | string[] {
  if (existing === undefined) return value;
  return Array.isArray(existing) ? [...existing, value] : [String(existing), value];
}
