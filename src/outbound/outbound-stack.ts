import type { OutgoingHttpHeaders } from 'node:http';
import type { CallContext } from '../core/call-context.ts';
import type { Random } from '../core/clock.ts';
import type { RespondVerdict } from '../core/verdict.ts';
import { respond } from '../core/verdict.ts';
import { createCallContext, pathWithQuery, readRequestTarget, requestBody } from '../proxy/call.ts';
import type { CallRecording, CallTelemetry } from '../proxy/call-telemetry.ts';
import { beginCall, observeAttempt, propagateTrace, recordCall, rejectMalformed, replyDenied, replyError, UNKNOWN_DESTINATION } from '../proxy/call-telemetry.ts';
import { forward } from '../proxy/forward.ts';
import { mutateHeaders, upstreamRequestHeaders } from '../proxy/headers.ts';
import type { DownstreamRequest, DownstreamResponse, RequestHandler } from '../proxy/listener.ts';
import { createRequestIds } from '../proxy/request-ids.ts';
import { createRouteHeaderCache, ROUTE_HEADER } from '../proxy/route-header.ts';
import type { Cluster, ClusterTarget } from './cluster.ts';
import type { DeprecationReporter } from './deprecation-reporter.ts';
import { createDestinationCache } from './destination.ts';
import { createRetryPlan } from './retry-plan.ts';
import type { CompiledRoute } from './router.ts';
import { pickBackend } from './router.ts';
import type { RegisteredService, ServiceRegistry } from './service-registry.ts';
import { callRetirement } from './version-retirement.ts';
import type { ServiceVersion, VersionTable } from './versions.ts';
import { pinnedVersion } from './versions.ts';

export interface OutboundStackDeps {
  readonly workload: { readonly service: string; readonly namespace: string };
  readonly registry: ServiceRegistry;
  readonly idleTimeoutMs: number;
  readonly telemetry: CallTelemetry;
  readonly random: Random;
  /** Counts and logs calls answered by a deprecated version; absent in tests that do not look. */
  readonly deprecations?: DeprecationReporter;
  /**
   * With interception: a call to a host the registry does not know, made on a
   * captured connection, may go to where the app was dialling
   * (src/interception/http-passthrough.ts). False: answered route.not_found.
   */
  readonly unregistered?: (req: DownstreamRequest, res: DownstreamResponse, call: CallContext, recording: CallRecording) => boolean;
}

/** Where a call goes once its route is known: a cluster, the label subset of its endpoints, and the version asked for. */
interface Backend {
  readonly cluster: Cluster;
  readonly subset: Readonly<Record<string, string>> | undefined;
  /** The version pinned by x-meshgate-version, if any. */
  readonly version: ServiceVersion | undefined;
  /** The destination's versions, when the backend is the destination's own cluster (versions are subsets of its endpoints). */
  readonly versions: VersionTable | undefined;
}

/**
 * The outbound data path, one step per line. No filter chain: per-call policy
 * is enforced by the destination's inbound sidecar.
 */
export function createOutboundStack(deps: OutboundStackDeps): RequestHandler {
  const { telemetry } = deps;
  const newRequestId = createRequestIds();
  const destinationOf = createDestinationCache();
  const routeHeaderOf = createRouteHeaderCache();
  return (req, res) => {
    const startedAt = telemetry.clock.monotonic();
    const target = readRequestTarget(req); // origin-form or absolute-form (HTTP proxy mode)
    if ('code' in target) return rejectMalformed('outbound', req, res, target, telemetry); // 400: malformed, or a path refused by normalization
    const dest = destinationOf(target.authority); // orders, orders.shop, orders.shop.svc.cluster.local[:port]
    const namespace = dest.namespace ?? deps.workload.namespace;
    const service = deps.registry.lookup(dest.name, namespace); // registry lookup
    const call = createCallContext(req, target, { direction: 'outbound', startedAt, destination: { service: dest.name, namespace }, principal: undefined, newRequestId }); // the caller is the local app
    // Client span (parent: the app's trace context) and bytes in; the app picks authorities, so unregistered ones share one label.
    const recording = beginCall(telemetry, call, req, service ? `${dest.name}.${namespace}` : UNKNOWN_DESTINATION);
    if (!service && deps.unregistered?.(req, res, call, recording)) return; // interception: passthrough to where the app dialled
    if (!service) return replyDenied(telemetry, call, res, respond('route.not_found', 'no service in the registry for this authority'), recording);
    const route = findRoute(service.routes, call); // first route whose path, methods, headers and query match
    if (!route) return replyDenied(telemetry, call, res, respond('route.not_found', 'no route matches this request'), recording);
    call.annotations.route = route.name;
    const backend = chooseBackend(service, route, call, deps); // pinned version or weighted backend split
    if ('code' in backend) return replyDenied(telemetry, call, res, backend, recording);
    forwardCall(req, res, call, route, backend, deps, recording, routeHeaderOf); // pick endpoint -> forward with deadline and retries -> relay
  };
}

function findRoute(routes: readonly CompiledRoute[], call: CallContext): CompiledRoute | undefined {
  for (const route of routes) if (route.matches(call.method, call.path, call.query, call.headers)) return route;
  return undefined;
}

/** x-meshgate-version: NAME overrides the route's backend split; a known service with nothing to call is refused here. */
function chooseBackend(service: RegisteredService, route: CompiledRoute, call: CallContext, deps: OutboundStackDeps): Backend | RespondVerdict {
  let backend: Backend;
  const pinned = pinnedVersion(call.headers);
  if (pinned !== undefined) {
    const version = service.versions?.byName(pinned);
    // The reply names the destination only: which versions exist is the callers' Route document's business.
    if (!version) return respond('route.unknown_version', `${service.cluster.key} has no version of that name`);
    // No endpoint in the version's subset: the pick finds none and the call gets upstream.unavailable.
    backend = { cluster: service.cluster, subset: version.subset, version, versions: service.versions };
  } else {
    const split = pickBackend(route.backends, deps.random()); // weighted split
    if (!split) return respond('upstream.unavailable', 'route has no backend with weight');
    const cluster = deps.registry.cluster(split.service, split.namespace);
    if (!cluster) return respond('upstream.no_endpoint', `no endpoint of ${split.service}.${split.namespace} is registered`);
    backend = { cluster, subset: split.subset, version: undefined, versions: cluster === service.cluster ? service.versions : undefined };
  }
  // Before the endpoint check: a retired version's endpoints may be gone, and its callers must hear 410, not 503.
  const retired = retiredVersionRefusal(backend, deps);
  if (retired) return retired;
  // A known service with nothing to call: 503, so alerts on 5xx fire; 404 stays "no such service".
  if (backend.cluster.endpoints().length === 0) return respond('upstream.no_endpoint', `no endpoint of ${backend.cluster.key} is registered`);
  return backend;
}

/**
 * 410 when the call resolves to a version that is retired or in a brown-out
 * window now (the injected clock): the pinned one, else a version the chosen
 * backend's subset lies within. A backend without a subset (plain load
 * balancing) resolves to no version and is not refused.
 */
function retiredVersionRefusal(backend: Backend, deps: OutboundStackDeps): RespondVerdict | undefined {
  const { versions } = backend;
  if (!versions?.anyRetiring) return undefined;
  return callRetirement(backend.cluster.key, versions, backend.version, backend.subset, deps.telemetry.clock.now())?.verdict;
}

/** Picks an endpoint per attempt and forwards with the route's deadline and retries; the answering endpoint's version shapes the relayed head. */
function forwardCall(
  req: DownstreamRequest,
  res: DownstreamResponse,
  call: CallContext,
  route: CompiledRoute,
  backend: Backend,
  deps: OutboundStackDeps,
  recording: CallRecording,
  routeHeaderOf: ReturnType<typeof createRouteHeaderCache>,
): void {
  const { cluster, subset } = backend;
  const protocol = cluster.config.protocol === 'auto' ? (call.httpVersion === '2' ? 'http2' : 'http1') : cluster.config.protocol;
  const headers = upstreamRequestHeaders(call.headers, { clientAddress: call.source.address, proto: 'http', requestId: call.id, authority: call.authority });
  mutateHeaders(headers, route.requestHeaders);
  // The destination's sidecar learns the route and version labels from us alone (its checks of your own see them); never from the app, never off the mesh.
  delete headers[ROUTE_HEADER];
  if (cluster.peerSidecars) headers[ROUTE_HEADER] = routeHeaderOf(route, subset);
  propagateTrace(deps.telemetry, recording, headers); // W3C out: the next hop's spans become children of the client span
  const retry = route.retries
    ? createRetryPlan(route.retries, { method: call.method, isGrpc: call.isGrpc, routeTimeoutMs: route.timeoutMs, classify: cluster.classify }, cluster.budget, cluster.active, deps.random)
    : cluster.connectRetry; // a route without `retries`: connect failures only
  let picked: ClusterTarget | undefined; // attempts are sequential: the last pick is the one whose response head is relayed
  let attempts = 0;
  forward(
    {
      method: call.method,
      path: pathWithQuery(call),
      headers: headers as Record<string, string | string[]>,
      body: requestBody(req),
      timeoutMs: route.timeoutMs,
      bodyTimeoutMs: call.isGrpc ? 0 : deps.idleTimeoutMs,
      retry,
      pick: (tried) => observeAttempt(recording, (picked = cluster.pick(protocol, subset, tried)), attempts++), // balancer skips ejected endpoints; each attempt an event on the span
      mutateResponseHeaders: (out) => relayedHead(out, picked, call, route, backend, deps.deprecations), // called once, for the head relayed
    },
    res,
    replyError(call, res),
  ).then((outcome) => {
    call.annotations.upstream = outcome.upstream;
    call.annotations.retries = outcome.retries;
    recordCall(deps.telemetry, call, outcome, recording);
  });
}

/** The response head relayed: the answering endpoint's version in the log, deprecation headers, then the route's own changes. */
function relayedHead(out: OutgoingHttpHeaders, picked: ClusterTarget | undefined, call: CallContext, route: CompiledRoute, backend: Backend, deprecations: DeprecationReporter | undefined): void {
  const { versions, version } = backend;
  if (versions && picked) {
    const answered = versions.versionOf(picked.labels, version);
    if (answered) call.annotations.version = answered.name;
    const deprecated = versions.anyDeprecated ? versions.deprecatedVersionOf(picked.labels, version) : undefined;
    if (deprecated) {
      const h = deprecated.deprecation!.headers;
      // Set before the route's own changes, so a route's responseHeaders can still remove or replace them.
      out.sunset = h.sunset;
      out.deprecation = h.deprecation;
      out['x-meshgate-deprecation'] = h.message;
      deprecations?.report(backend.cluster.key, deprecated);
    }
  }
  mutateHeaders(out, route.responseHeaders);
}
