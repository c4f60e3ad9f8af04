import { z } from 'zod';
import { byteSize, duration } from './durations.ts';
import { policySubscriberConfigSchema } from './policy-subscriber-schema.ts';
import { CONFIG_ROUTE_BOUNDS, routeSchema } from './route-schema.ts';
import { logLevelSchema, tracingConfigSchema } from './telemetry-schema.ts';

/*
 * The sidecar configuration file. Every field is described here once; the
 * README reference table is generated from these descriptions
 * (`npm run docs:config`) and a unit test keeps the two in step.
 */

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:8080 or [::1]:8080');

const listener = (defaultPort: number, defaultAddress: string) =>
  z.strictObject({
    address: z.string().min(1).default(defaultAddress).describe('Address to bind.'),
    port: z.number().int().min(0).max(65535).default(defaultPort).describe('Port to bind; 0 picks a free port.'),
  });

const route = routeSchema(CONFIG_ROUTE_BOUNDS);

const endpoint = z.strictObject({
  address: hostPort.describe('host:port of the endpoint (a peer sidecar inbound, or an external service).'),
  weight: z.number().int().min(1).max(10000).default(1).describe('Weight for the weighted balancer.'),
  labels: z.record(z.string(), z.string()).default({}).describe('Labels used by route subsets (e.g. version: v1).'),
});

const identity = z.strictObject({
  trustDomain: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'expected a trust domain like cluster.local')
    .default('cluster.local')
    .describe('SPIFFE trust domain of the mesh.'),
  serviceAccount: z.string().optional().describe('Service account the workload runs as; defaults to workload.service. The CA decides, this only checks.'),
  ca: z
    .strictObject({
      address: hostPort.describe('host:port of `meshgate ca` (gRPC over TLS).'),
      trustBundleFile: z.string().min(1).describe('PEM roots that vouch for the CA (trust-bundle.pem from `meshgate certs init`).'),
      serverName: z.string().default('meshgate-ca').describe('Name checked in the CA serving certificate.'),
      timeout: duration.default(5_000).describe('Deadline of one signing call.'),
    })
    .describe('Where certificates come from.'),
  tokenFile: z.string().optional().describe('Bootstrap token (JWT), re-read before every signing. Once a certificate exists, renewals authenticate with it.'),
  keyType: z.enum(['ecdsa-p256', 'rsa-2048']).default('ecdsa-p256').describe('Workload key type; the key is generated in-process and never leaves it.'),
  ttl: duration.default(86_400_000).describe('Requested certificate lifetime (the CA caps it).'),
  renewFraction: z.number().min(0.1).max(0.9).default(0.5).describe('Renew after this fraction of the lifetime.'),
  jitterFraction: z.number().min(0).max(0.2).default(0.05).describe('Random +/- share of the lifetime added to the renewal time.'),
  retry: z
    .strictObject({
      base: duration.default(200).describe('Backoff after the first failed signing; each failure in a row doubles the ceiling (full jitter, plus base).'),
      max: duration.default(30_000).describe('Largest backoff ceiling between signing attempts.'),
      probeInterval: duration
        .default(500)
        .describe('While waiting out a backoff, a TCP connect to identity.ca.address this often: when the CA answers again after being unreachable, the next attempt starts at once. 0 disables.'),
    })
    .prefault({})
    .refine((r) => r.max >= r.base, { message: 'max must be at least base', path: ['max'] })
    .describe('Retries while the CA is unreachable or refuses; the current certificate keeps serving meanwhile.'),
});

const service = z.strictObject({
  name: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'expected a DNS label')
    .describe('Service name.'),
  namespace: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'expected a DNS label')
    .default('default')
    .describe('Namespace.'),
  protocol: z.enum(['auto', 'http1', 'http2']).default('auto').describe('Upstream protocol; auto uses the protocol the app used.'),
  tls: z
    .enum(['auto', 'mesh', 'none'])
    .default('auto')
    .describe('mesh: mutual TLS with SPIFFE ID check (peer sidecars); none: plaintext (services outside the mesh); auto: mesh when identity is configured.'),
  identities: z.array(z.string().startsWith('spiffe://')).optional().describe('SPIFFE IDs the endpoints may present; default spiffe://<trust-domain>/ns/<namespace>/sa/<name>.'),
  endpoints: z.array(endpoint).min(1).describe('Endpoints of the service.'),
  loadBalancer: z.enum(['round_robin', 'least_request', 'weighted']).default('least_request').describe('round_robin, least_request (power of two choices) or weighted (smooth weighted round robin).'),
  connectTimeout: duration.default(2_000).describe('TCP connect timeout per endpoint.'),
  maxConnectionsPerEndpoint: z.number().int().min(1).default(128).describe('HTTP/1.1 connections kept per endpoint.'),
  retryBudget: z
    .strictObject({
      percent: z.number().min(0).max(100).default(20).describe('Retries allowed as a share of active requests.'),
      minConcurrency: z.number().int().min(0).default(3).describe('Retries always allowed concurrently, whatever the share.'),
    })
    .prefault({})
    .describe('Caps retries so they cannot multiply load during an outage.'),
  outlierDetection: z
    .strictObject({
      consecutive5xx: z.number().int().min(1).default(5).describe('Consecutive 5xx answers that eject an endpoint.'),
      consecutiveConnectFailures: z.number().int().min(1).default(3).describe('Consecutive connect failures or resets that eject an endpoint.'),
      baseEjection: duration.default(30_000).describe('First ejection time; doubles with each repeated ejection.'),
      maxEjectionPercent: z.number().min(0).max(100).default(50).describe('Never eject more than this share of endpoints.'),
    })
    .prefault({})
    .describe('Passive health: the circuit breaker.'),
  healthCheck: z
    .strictObject({
      path: z.string().startsWith('/').default('/healthz').describe('HTTP GET path probed.'),
      interval: duration.default(5_000).describe('Time between probes.'),
      timeout: duration.default(1_000).describe('Probe timeout.'),
      unhealthyThreshold: z.number().int().min(1).default(2).describe('Failed probes before an endpoint is marked down.'),
      healthyThreshold: z.number().int().min(1).default(1).describe('Passed probes before it is back.'),
    })
    .optional()
    .describe('Optional active health checks.'),
  routes: z.array(route).default([]).describe('Routes tried in order; when none is given every call goes to all endpoints.'),
});

/** A service pushed by the policy server: same defaults, and it may have no endpoint right now. */
export const registryServiceSchema = service.extend({ endpoints: z.array(endpoint) });

export const sidecarConfigSchema = z
  .strictObject({
    workload: z
      .strictObject({
        service: z.string().min(1).describe('Service this sidecar fronts.'),
        namespace: z.string().min(1).default('default').describe('Namespace of the workload.'),
        address: hostPort
          .optional()
          .describe('host:port where other sidecars reach this workload (registered with the policy server); default: the inbound listener address, or the hostname when it binds 0.0.0.0.'),
        labels: z.record(z.string(), z.string()).default({}).describe('Labels registered with the endpoint (e.g. version: v2), used by route subsets.'),
      })
      .describe('Who this sidecar is.'),
    listeners: z
      .strictObject({
        outbound: listener(15001, '127.0.0.1').prefault({}).describe('Calls from the local app to the mesh.'),
        inbound: listener(15006, '0.0.0.0').prefault({}).describe('Calls from the mesh to the local app.'),
        admin: listener(15000, '127.0.0.1').prefault({}).describe('Admin endpoints: /live, /ready, /metrics, /config_dump.'),
        edge: z
          .strictObject({
            address: z.string().min(1).default('0.0.0.0').describe('Address to bind.'),
            port: z.number().int().min(0).max(65535).default(15443).describe('Port to bind.'),
            certFile: z.string().min(1).describe('PEM certificate chain shown to callers outside the mesh; reloaded when the file changes.'),
            keyFile: z.string().min(1).describe('PEM private key of certFile; reloaded with it.'),
          })
          .optional()
          .describe('Optional TLS listener for callers outside the mesh (no client certificate): same inbound chain, no source principal.'),
      })
      .prefault({})
      .describe('Bind addresses.'),
    inbound: z
      .strictObject({
        app: z.url({ protocol: /^http$/ }).describe('URL of the local app, e.g. http://127.0.0.1:8080.'),
        appProtocol: z
          .enum(['auto', 'http1', 'http2'])
          .default('auto')
          .describe(
            'Protocol to the app; auto uses the protocol the caller used, except that HTTP/2 calls other than gRPC reach an app that does not speak h2c (asked once a minute at most) over HTTP/1.1.',
          ),
        timeout: duration.default(60_000).describe('Time the app has to send its response head.'),
        readinessPath: z.string().startsWith('/').optional().describe('Path probed on the app by /ready; when omitted a TCP connect is enough.'),
      })
      .describe('The local app behind the inbound listener.'),
    interception: z
      .strictObject({
        appPorts: z
          .array(z.number().int().min(1).max(65535))
          .min(1)
          .optional()
          .describe(
            'Ports the app serves. A captured inbound connection to one of them reaches the app on that port (at the host of inbound.app); to any other port it is refused (meshgate_interception_refusals_total). Default: the port of inbound.app.',
          ),
        outboundTrafficPolicy: z
          .enum(['ALLOW_ANY', 'REGISTRY_ONLY'])
          .default('ALLOW_ANY')
          .describe(
            'Captured outbound traffic the registry does not route: ALLOW_ANY passes it through to where the app was dialling (HTTP to an unknown host, TLS, databases); REGISTRY_ONLY refuses it (HTTP: 404 route.not_found; other protocols: connection closed). Counted either way.',
          ),
        protocolDetectionTimeout: duration
          .default(1_000)
          .describe(
            'How long a captured outbound connection may stay silent before it is taken for a server-first protocol (a database that speaks first) and passed through. List such ports in --exclude-outbound-ports to skip the wait.',
          ),
      })
      .optional()
      .describe(
        'Transparent interception: the pod runs `meshgate iptables`, so the app needs no proxy settings. Needs Linux and the koffi package (SO_ORIGINAL_DST). Without this section a redirected connection is handled as if the app had dialled the listener.',
      ),
    limits: z
      .strictObject({
        maxHeaderSize: z.number().int().min(1024).max(1_048_576).default(16_384).describe('Largest request head in bytes (HTTP/1.1) / header list (HTTP/2).'),
        maxHeadersCount: z.number().int().min(8).max(1000).default(100).describe('Most request headers accepted.'),
        headersTimeout: duration
          .default(10_000)
          .describe(
            'Time a client has to send the whole request head (HTTP/2: its first HEADERS frame), from accept or, on TLS, from the end of the handshake; the TLS handshake gets as long again. Past it: 408 request.timeout, or the connection closed when no reply is possible.',
          ),
        requestTimeout: duration.default(300_000).describe('Time a client has to send the whole request.'),
        idleTimeout: duration.default(60_000).describe('Idle keep-alive connection or HTTP/2 session closed after this (an HTTP/1.1 connection up to a tenth of it later, at most 1 s).'),
        maxConnections: z.number().int().min(1).default(10_000).describe('Connections per listener; more are refused.'),
        maxConnectionsPerSource: z
          .number()
          .int()
          .min(1)
          .default(1_000)
          .describe(
            'Connections one source address may hold open on a listener; more are refused (counted in meshgate_connections_refused_total). Behind a load balancer or NAT every client shares its address: raise it there.',
          ),
        http2MaxConcurrentStreams: z.number().int().min(1).default(250).describe('Concurrent HTTP/2 streams per connection.'),
        http2MaxSessionMemory: z.number().int().min(1).default(10).describe('HTTP/2 session memory cap in MiB.'),
        http2RapidResetMinStreams: z
          .number()
          .int()
          .min(10)
          .default(100)
          .describe(
            'HTTP/2 rapid-reset guard: once a connection has opened this many streams, it is closed with GOAWAY ENHANCE_YOUR_CALM if the caller reset at least half of them within 1 s of opening.',
          ),
        maxBodyBuffer: byteSize.default(1_048_576).describe('Largest body a filter may buffer.'),
        maxBufferedBodies: byteSize
          .default(33_554_432)
          .describe('Request body bytes all calls together may hold in memory while filters read them; past it a call that needs its body read gets 503 sidecar.overloaded. At least maxBodyBuffer.'),
        maxResponseCache: byteSize
          .default(33_554_432)
          .describe('Response bytes the inbound response cache (Route responses[].cache) holds, all entries together; the least recently used go first. 0 turns caching off.'),
      })
      .prefault({})
      .describe('Hardening limits, set explicitly on every listener.'),
    drain: z
      .strictObject({
        timeout: duration.default(15_000).describe('On SIGTERM, in-flight calls get this long before the process exits.'),
      })
      .prefault({})
      .describe('Graceful shutdown.'),
    memory: z
      .strictObject({
        releaseWhenQuiet: z
          .boolean()
          .default(true)
          .describe(
            "Give the heap back to the OS when the sidecar goes quiet (a quarter second under 2% busy): once after start, and again when load has grown V8's heap by 16 MiB and it is still grown after 15 quiet seconds, at most once a minute. Each release blocks the sidecar once (measured on a 2-core VM: 29-39 ms after start, 52-130 ms after load), and a release after load also drops optimized code, so the first second of the next burst costs more CPU per call (61-105 against ~47 µs in a one-hop sidecar). false keeps that memory instead (V8 gives some of it back by itself).",
          ),
      })
      .prefault({})
      .describe('Memory the sidecar process holds.'),
    workers: z
      .number()
      .int()
      .min(1)
      .max(64)
      .default(1)
      .describe(
        'Processes serving the listeners, for a sidecar given more than one core. 1: one process, as without this field. N > 1: a primary process holds the CA client, the policy subscription and the admin listener, and hands each certificate and policy snapshot to N worker processes, which share the data ports (SO_REUSEPORT, Linux). Local rate limits are divided among the workers; auto-bans are per worker (see "Several workers").',
      ),
    identity: identity.optional().describe('Workload identity: certificates from the meshgate CA. Required unless mtls.mode is DISABLE.'),
    mtls: z
      .strictObject({
        mode: z
          .enum(['STRICT', 'PERMISSIVE', 'DISABLE'])
          .default('STRICT')
          .describe('Inbound listener: STRICT accepts only mutual TLS from the mesh; PERMISSIVE also plaintext (migrations); DISABLE plaintext only, no identity.'),
      })
      .prefault({})
      .describe('Mutual TLS between sidecars.'),
    policy: policySubscriberConfigSchema.optional().describe('Policy from `meshgate policy-server` (authorization and the service registry). Without it the sidecar enforces no per-call policy.'),
    userFilters: z
      .strictObject({
        secretsDir: z
          .string()
          .min(1)
          .optional()
          .describe(
            "Folder of secret files (a mounted Kubernetes Secret) that checks of your own may sign with, by file name, through meshgate.hmacSha256Secret: the key stays in the sidecar, never in the check's sandbox. A Filter document names the files it may use in spec.secrets. Unset: no check can use a secret.",
          ),
      })
      .prefault({})
      .describe('Checks of your own (Filter documents): what the sidecar lends them.'),
    authorization: z
      .strictObject({
        allowWhenNoPolicy: z.boolean().default(false).describe('Mesh-wide switch: admit calls to a workload that no ALLOW AuthorizationPolicy selects. Default false: deny by default.'),
      })
      .prefault({})
      .describe('Authorization defaults.'),
    rateLimit: z
      .strictObject({
        redis: z
          .strictObject({
            url: z
              .string()
              .regex(/^rediss?:\/\/[^\s]+$/, 'expected redis://host:port[/db] or rediss:// for TLS')
              .describe('Redis holding the counters of RateLimitPolicy rules with scope: global, shared by every sidecar. A password belongs in passwordFile, not here.'),
            passwordFile: z.string().optional().describe('File holding the Redis password (AUTH), read at start; never logged.'),
            username: z.string().optional().describe('Redis ACL user name.'),
            caFile: z.string().optional().describe('PEM bundle of the CA that signs the Redis server certificate, for rediss:// with a private CA; the system roots otherwise.'),
            timeout: duration
              .default(100)
              .describe(
                "Time a counter update may take; past it the rule's failureMode decides the call. Well above a healthy Redis' sub-millisecond answer, so a sidecar whose event loop stalls under CPU pressure does not mistake its own lateness for an outage.",
              ),
            keyPrefix: z.string().max(64).default('meshgate:rl:').describe('Prefix of every key meshgate writes.'),
          })
          .optional()
          .describe('Without it, a scope: global rule cannot be counted and its failureMode (default deny) applies to every call it matches.'),
        maxLocalBuckets: z
          .number()
          .int()
          .min(1000)
          .max(10_000_000)
          .default(100_000)
          .describe('Most per-caller buckets kept in memory; the least recently used is dropped first (a dropped bucket starts full).'),
        maxQueuedCalls: z
          .number()
          .int()
          .min(1)
          .max(1_000_000)
          .default(10_000)
          .describe(
            'Most calls waiting at once in the queues of RateLimitPolicy throttle and concurrency rules, all rules together (per worker); past it a call that would wait is refused as if its queue were full.',
          ),
      })
      .prefault({})
      .describe('Rate limiting (RateLimitPolicy): local buckets in this sidecar, global ones in Redis.'),
    log: z
      .strictObject({
        level: logLevelSchema,
        accessLog: z.boolean().default(true).describe('One JSON line per call (written at info whatever `level` says; turn it off here).'),
        accessLogSampling: z
          .number()
          .default(1)
          .describe('Share of successful calls logged, 0 to 1; calls with status >= 400 or a meshgate reason code are always logged. Out of range: 1, with one warning.'),
      })
      .prefault({})
      .describe('Logging.'),
    services: z.array(service).default([]).describe('Static service registry: services the local app may call.'),
    telemetry: z
      .strictObject({
        tracing: tracingConfigSchema.prefault({}).describe('OpenTelemetry traces: a server span per inbound call, a client span per outbound call, exported over OTLP.'),
        metrics: z
          .strictObject({
            requests: z
              .boolean()
              .default(true)
              .describe('Count and time every call (meshgate_requests_total, meshgate_request_duration_seconds, meshgate_upstream_retries_total). Off only to measure their cost.'),
          })
          .prefault({})
          .describe('Prometheus metrics on the admin listener.'),
      })
      .prefault({})
      .describe('Traces and metrics (logs are under `log`).'),
  })
  .superRefine((config, ctx) => {
    if (config.limits.requestTimeout < config.limits.headersTimeout) {
      // node:http refuses the pair at start-up with a RangeError; say it here, with the field.
      ctx.addIssue({ code: 'custom', path: ['limits', 'requestTimeout'], message: `must be at least limits.headersTimeout (${config.limits.headersTimeout} ms): the head is part of the request` });
    }
    if (config.limits.maxBufferedBodies < config.limits.maxBodyBuffer) {
      ctx.addIssue({
        code: 'custom',
        path: ['limits', 'maxBufferedBodies'],
        message: `must be at least limits.maxBodyBuffer (${config.limits.maxBodyBuffer} bytes), or no body could ever be read whole`,
      });
    }
    if (config.mtls.mode !== 'DISABLE' && !config.identity) {
      ctx.addIssue({ code: 'custom', path: ['identity'], message: `missing required field (mtls.mode is ${config.mtls.mode}; set identity, or mtls.mode: DISABLE for a plaintext mesh)` });
    }
    const known = new Set(config.services.map((svc) => `${svc.name}.${svc.namespace}`));
    config.services.forEach((svc, i) => {
      if (known.size < config.services.length && config.services.findIndex((o) => o.name === svc.name && o.namespace === svc.namespace) !== i) {
        ctx.addIssue({ code: 'custom', path: ['services', i, 'name'], message: `${svc.name}.${svc.namespace} is listed twice` });
      }
      if (svc.tls === 'mesh' && !config.identity) {
        ctx.addIssue({ code: 'custom', path: ['services', i, 'tls'], message: 'mesh needs identity to be configured' });
      }
      // Every backend must name a known service: a typo is a start-up error, not a 404 at 3 a.m.
      svc.routes.forEach((route, r) => {
        route.backends?.forEach((backend, b) => {
          if (!backend.service) return;
          const dot = backend.service.indexOf('.');
          const ref = dot < 0 ? `${backend.service}.${svc.namespace}` : backend.service;
          if (!known.has(ref)) {
            ctx.addIssue({ code: 'custom', path: ['services', i, 'routes', r, 'backends', b, 'service'], message: `unknown service "${ref}"` });
          }
        });
      });
    });
  });

export type SidecarConfigInput = z.input<typeof sidecarConfigSchema>;
export type SidecarConfig = z.output<typeof sidecarConfigSchema>;
export type ServiceConfig = SidecarConfig['services'][number];
export type RouteConfig = ServiceConfig['routes'][number];
export type EndpointConfig = ServiceConfig['endpoints'][number];
export type RetryConfig = NonNullable<RouteConfig['retries']>;
export type HeaderMatchConfig = RouteConfig['match']['headers'][number];
export type StringMatchConfig = NonNullable<RouteConfig['match']['path']>;
export type HeaderMutationConfig = RouteConfig['requestHeaders'];
export type LimitsConfig = SidecarConfig['limits'];
export type RateLimitConfig = SidecarConfig['rateLimit'];
export type IdentityConfig = NonNullable<SidecarConfig['identity']>;
