import type { OutgoingHttpHeaders } from 'node:http';
import type { CallContext } from '../core/call-context.ts';
import type { Random } from '../core/clock.ts';
import type { Filter } from '../core/filter.ts';
import { runFilters } from '../core/filter.ts';
import { respond } from '../core/verdict.ts';
import type { Verdict } from '../core/verdict.ts';
import { sendVerdict } from '../errors/reply.ts';
import { createCallContext, pathWithQuery, readRequestTarget, requestBody } from '../proxy/call.ts';
import { UNKNOWN_DESTINATION, beginCall, observeAttempt, propagateTrace, recordCall, rejectMalformed, replyDenied } from '../proxy/call-telemetry.ts';
import type { CallRecording, CallTelemetry } from '../proxy/call-telemetry.ts';
import { forward } from '../proxy/forward.ts';
import { mutateHeaders, upstreamRequestHeaders } from '../proxy/headers.ts';
import type { DownstreamRequest, DownstreamResponse, RequestHandler } from '../proxy/listener.ts';
import type { Cluster, ClusterTarget } from './cluster.ts';
import type { DeprecationReporter } from './deprecation-reporter.ts';
import { destinationOf } from './destination.ts';
import { createRetryPlan } from './retry-plan.ts';
import { pickBackend } from './router.ts';
import type { CompiledRoute } from './router.ts';
import type { RegisteredService, ServiceRegistry } from './service-registry.ts';
import { pinnedVersion } from './versions.ts';
import type { ServiceVersion } from './versions.ts';

export interface OutboundStackDeps {
  readonly workload: { readonly service: string; readonly namespace: string };
  readonly registry: ServiceRegistry;
  readonly idleTimeoutMs: number;
  readonly filters: () => readonly Filter[];
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

/**
 * The outbound data path, one step per line:
 *   listener -> destination (authority) -> CallContext -> filter chain -> route
 *   -> pinned version or backend split -> balancer + outlier detection -> retries/timeout
 *   -> upstream pool -> deprecation headers on the response
 */
export function createOutboundStack(deps: OutboundStackDeps): RequestHandler {
  const { telemetry } = deps;
  return (req, res) => {
    const startedAt = telemetry.clock.monotonic();
    const target = readRequestTarget(req); // origin-form or absolute-form (HTTP proxy mode)
    if ('code' in target) return rejectMalformed('outbound', req, res, target, telemetry); // 400: malformed, or a path refused by normalization
    const dest = destinationOf(target.authority); // orders, orders.shop, orders.shop.svc.cluster.local[:port]
    const namespace = dest.namespace ?? deps.workload.namespace;
    const service = deps.registry.lookup(dest.name, namespace);
    const call = createCallContext(req, target, {
      direction: 'outbound',
      startedAt,
      destination: { service: dest.name, namespace },
      principal: undefined, // the caller is the local app
    });
    // Client span (parent: the app's trace context) and bytes in; the app picks authorities, so unregistered ones share one label.
    const recording = beginCall(telemetry, call, req, service ? `${dest.name}.${namespace}` : UNKNOWN_DESTINATION);
    if (!service) {
      if (deps.unregistered?.(req, res, call, recording)) return;
      return replyDenied(deps.telemetry, call, res, respond('route.not_found', 'no service in the registry for this authority'), recording);
    }
    const verdict = runFilters(deps.filters(), call);
    if (verdict instanceof Promise) {
      verdict.then(
        (v) => afterFilters(v, service, call, req, res, deps, recording),
        () => replyDenied(deps.telemetry, call, res, respond('filter.error', 'a policy check failed'), recording),
      );
    } else {
      afterFilters(verdict, service, call, req, res, deps, recording);
    }
  };
}

function findRoute(routes: readonly CompiledRoute[], call: CallContext): CompiledRoute | undefined {
  for (const route of routes) if (route.matches(call.method, call.path, call.query, call.headers)) return route;
  return undefined;
}

function afterFilters(
  verdict: Verdict,
  service: RegisteredService,
  call: CallContext,
  req: DownstreamRequest,
  res: DownstreamResponse,
  deps: OutboundStackDeps,
  recording: CallRecording,
): void {
  if (verdict.kind === 'respond') return replyDenied(deps.telemetry, call, res, verdict, recording);
  const route = findRoute(service.routes, call); // path, method, headers, query
  if (!route) return replyDenied(deps.telemetry, call, res, respond('route.not_found', 'no route matches this request'), recording);
  call.annotations.route = route.name;
  const pinned = pinnedVersion(call.headers); // x-meshgate-version: NAME overrides the backend split
  let cluster: Cluster | undefined;
  let subset: Readonly<Record<string, string>> | undefined;
  let version: ServiceVersion | undefined;
  if (pinned !== undefined) {
    version = service.versions?.byName(pinned);
    // The reply names the destination only: which versions exist is the callers' Route document's business.
    if (!version) return replyDenied(deps.telemetry, call, res, respond('route.unknown_version', `${service.cluster.key} has no version of that name`), recording);
    cluster = service.cluster;
    subset = version.subset; // no endpoint in it: the pick finds none and the call gets upstream.unavailable
  } else {
    const backend = pickBackend(route.backends, deps.random()); // weighted split
    if (!backend) return replyDenied(deps.telemetry, call, res, respond('upstream.unavailable', 'route has no backend with weight'), recording);
    cluster = deps.registry.cluster(backend.service, backend.namespace);
    if (!cluster) return replyDenied(deps.telemetry, call, res, respond('upstream.no_endpoint', `no endpoint of ${backend.service}.${backend.namespace} is registered`), recording);
    subset = backend.subset;
  }
  // A known service with nothing to call: 503, so alerts on 5xx fire; 404 stays "no such service".
  if (cluster.endpoints().length === 0) return replyDenied(deps.telemetry, call, res, respond('upstream.no_endpoint', `no endpoint of ${cluster.key} is registered`), recording);
  // Versions are label subsets of the destination's own endpoints; a backend on another service has none.
  const versionTable = cluster === service.cluster ? service.versions : undefined;
  const versions = versionTable?.anyDeprecated ? versionTable : undefined;
  const target = cluster;
  let picked: ClusterTarget | undefined; // attempts are sequential: the last pick is the one whose response head is relayed
  const protocol = cluster.config.protocol === 'auto' ? (call.httpVersion === '2' ? 'http2' : 'http1') : cluster.config.protocol;
  const headers = upstreamRequestHeaders(call.headers, { clientAddress: call.source.address, proto: 'http', requestId: call.id, authority: call.authority });
  mutateHeaders(headers, route.requestHeaders);
  propagateTrace(deps.telemetry, recording, headers); // W3C out: the next hop's spans become children of the client span
  const retry = route.retries
    ? createRetryPlan(route.retries, { method: call.method, isGrpc: call.isGrpc, routeTimeoutMs: route.timeoutMs, classify: cluster.classify }, cluster.budget, cluster.active, deps.random)
    : undefined;
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
      pick: (tried) => observeAttempt(recording, (picked = target.pick(protocol, subset, tried)), attempts++), // balancer skips ejected endpoints; each attempt an event on the span
      mutateResponseHeaders: (out: OutgoingHttpHeaders) => {
        // Called once, for the response head relayed: `picked` is the endpoint that answered.
        const answered = versionTable && picked ? versionTable.versionOf(picked.labels, version) : undefined;
        if (answered) call.annotations.version = answered.name;
        const deprecated = versions && picked ? versions.deprecatedVersionOf(picked.labels, version) : undefined;
        if (deprecated) {
          const h = deprecated.deprecation!.headers;
          // Set before the route's own changes, so a route's responseHeaders can still remove or replace them.
          out.sunset = h.sunset;
          out.deprecation = h.deprecation;
          out['x-meshgate-deprecation'] = h.message;
          deps.deprecations?.report(target.key, deprecated);
        }
        mutateHeaders(out, route.responseHeaders);
      },
    },
    res,
    (code, reason) => sendVerdict(res, respond(code, reason), { grpc: call.isGrpc, requestId: call.id }),
  ).then((outcome) => {
    call.annotations.upstream = outcome.upstream;
    call.annotations.retries = outcome.retries;
    recordCall(deps.telemetry, call, outcome, recording);
  });
}
