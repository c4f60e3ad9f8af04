import type { CallMetrics } from './call-metrics.ts';
import { DurationHistogram, RequestCounts } from './call-metrics.ts';
import { createPerCallCounter } from './per-call-counter.ts';
import { collectProcessMetrics } from './process-metrics.ts';
import { Counter, Gauge, Registry } from './prom-client.ts';

/** Latency buckets (seconds): sub-millisecond hops up to slow upstreams. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * The sidecar's metrics, on a registry owned by this instance (never prom-client's
 * global one), so two sidecars in one test process do not share counters.
 */
export interface SidecarMetrics {
  readonly registry: Registry;
  /** One per AuthorizationPolicy decision (decision: allow | deny | audit); policy and rule come from policy documents, never from requests. */
  readonly authzDecisions: Counter<'decision' | 'policy' | 'rule'>;
  readonly shadowDenials: Counter<'policy' | 'rule'>;
  /** One per ValidationPolicy rule that matched a call and was evaluated (decision: passed | failed | shadow_failed). */
  readonly validationDecisions: Counter<'policy' | 'rule' | 'decision'>;
  /** One per Filter document (a check of your own) run on a call; policy is its namespace/name, code the check's own code or the failure kind. */
  readonly userFilterDecisions: Counter<'policy' | 'decision' | 'code'>;
  /** Read through the registry or get(); the data path counts into it through `calls`. */
  readonly requestsTotal: Counter<'direction' | 'source_principal' | 'destination_service' | 'response_code' | 'reason'>;
  readonly requestDuration: DurationHistogram;
  /** What every call records (requestsTotal, requestDuration), at a data path's cost. */
  readonly calls: CallMetrics;
  readonly upstreamRetries: Counter<'destination_service'>;
  readonly outlierEjections: Counter<'destination_service'>;
  /** Calls answered by a deprecated version of a Route; both labels come from the registry and policy documents, never from requests. */
  readonly deprecatedCalls: Counter<'destination_service' | 'version'>;
  readonly inFlight: Gauge<'direction'>;
  readonly tlsHandshakeErrors: Counter<'listener' | 'reason'>;
  readonly connectionsClosed: Counter<'listener' | 'reason'>;
  /** Connections refused on accept (reason: max_connections, max_connections_per_source). */
  readonly connectionsRefused: Counter<'listener' | 'reason'>;
  readonly certExpiry: Gauge;
  readonly policyVersion: Gauge<'version' | 'source'>;
  /** 1 when the policy in force is on disk (a restart without a server finds it), 0 when not; read at scrape time. */
  readonly policyPersisted: Gauge;
  readonly policyPersistFailures: Counter;
  readonly ipBans: Counter;
  readonly ipBanEvictions: Counter<'list'>;
  readonly ipBannedAddresses: Gauge;
  /** One per RateLimitPolicy rule that matched a call; decision values in src/filters/ratelimit/ratelimit-runtime.ts. */
  readonly rateLimitDecisions: Counter<'policy' | 'rule' | 'decision'>;
  readonly rateLimitBucketEvictions: Counter;
  readonly rateLimitLocalBuckets: Gauge;
  /** Calls holding a slot of a RateLimitPolicy concurrency rule, per rule; read at scrape time. */
  readonly rateLimitInFlight: Gauge<'policy' | 'rule'>;
  /** Calls waiting in a throttle or concurrency queue, per rule; read at scrape time. */
  readonly rateLimitQueued: Gauge<'policy' | 'rule'>;
  readonly bufferedBodyBytes: Gauge;
  /** Captured outbound traffic sent on to its original destination unrouted; reason values in src/interception/outbound-divert.ts. */
  readonly outboundPassthrough: Counter<'reason'>;
  /** Captured connections refused; direction inbound|outbound, reason values in src/interception/. */
  readonly interceptionRefusals: Counter<'direction' | 'reason'>;
  /** Inbound response cache (Route responses[].cache); `rule` from policy documents, result and reason from src/filters/response/. */
  readonly responseCacheLookups: Counter<'rule' | 'result' | 'reason'>;
  readonly responseCacheStores: Counter<'rule' | 'result' | 'reason'>;
  readonly responseCacheEvictions: Counter;
  readonly responseCacheBytes: Gauge;
}

export function createSidecarMetrics(opts: {
  defaultMetrics: boolean;
  /** Read at scrape time, so the hot path does no gauge bookkeeping. */
  inFlight?: (direction: 'inbound' | 'outbound') => number;
  /** notAfter of the current workload certificate (ms since the epoch), if any. */
  certNotAfterMs?: () => number | undefined;
  /** Addresses on the auto-ban list right now, read at scrape time. */
  bannedAddresses?: () => number;
  /** Local rate-limit buckets in memory right now, read at scrape time. */
  localBuckets?: () => number;
  /** Per RateLimitPolicy rule with a call in flight (concurrency rules) or waiting (throttle and concurrency), read at scrape time. */
  rateLimitUsage?: () => Iterable<{ readonly owner: { readonly policy: string; readonly rule: string }; readonly inFlight: number; readonly queued: number }> | undefined;
  /** Request body bytes held for filters right now (limits.maxBufferedBodies), read at scrape time. */
  bufferedBodyBytes?: () => number;
  /** Whether the policy in force is persisted; undefined (no policy section): the gauge is absent. */
  policyPersisted?: () => boolean | undefined;
  /** Log lines dropped so far because stdout was not read, read at scrape time. */
  droppedLogLines?: () => number;
}): SidecarMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectProcessMetrics(registry);
  const registers = [registry];
  if (opts.droppedLogLines) {
    const dropped = opts.droppedLogLines;
    new Counter({
      name: 'meshgate_log_lines_dropped_total',
      help: 'Log lines (access log included) this sidecar dropped because 16 MiB were already waiting for stdout: whoever reads it stalled. Alert when it grows.',
      registers,
      collect() {
        this.reset();
        this.inc(dropped());
      },
    });
  }
  const counts = new RequestCounts();
  const requestsTotal = new Counter({
    name: 'meshgate_requests_total',
    help: 'Calls handled, by direction, caller, destination, status and meshgate reason code (empty when the upstream answered).',
    labelNames: ['direction', 'source_principal', 'destination_service', 'response_code', 'reason'],
    registers,
    collect() {
      counts.flushInto(this);
    },
  });
  const requestDuration = new DurationHistogram('meshgate_request_duration_seconds', 'Time from the request head to the end of the response.', DURATION_BUCKETS);
  requestDuration.registerIn(registry);
  return {
    registry,
    requestsTotal,
    requestDuration,
    calls: {
      record(direction, principal, destination, status, reason, seconds) {
        counts.add(direction, principal, destination, status, reason);
        requestDuration.observe(direction, destination, seconds);
      },
      count(direction, principal, destination, status, reason) {
        counts.add(direction, principal, destination, status, reason);
      },
    },
    upstreamRetries: new Counter({
      name: 'meshgate_upstream_retries_total',
      help: 'Retries sent to upstream services.',
      labelNames: ['destination_service'],
      registers,
    }),
    authzDecisions: createPerCallCounter({
      name: 'meshgate_authz_decisions_total',
      help: 'AuthorizationPolicy decisions: decision=allow|deny, plus decision=audit per matching AUDIT rule; policy=namespace/name and rule of the deciding rule (empty for deny or allow by default).',
      labelNames: ['decision', 'policy', 'rule'],
      registers,
    }),
    shadowDenials: createPerCallCounter({
      name: 'meshgate_shadow_denials_total',
      help: 'Allowed calls that a rule in shadow mode would have denied, per policy (namespace/name) and rule (empty: a shadow ALLOW policy none of whose rules matched).',
      labelNames: ['policy', 'rule'],
      registers,
    }),
    validationDecisions: createPerCallCounter({
      name: 'meshgate_validation_decisions_total',
      help: 'ValidationPolicy rules evaluated for a call, by policy (namespace/name), rule and decision (passed, failed, shadow_failed, logged: an injection finding in log mode).',
      labelNames: ['policy', 'rule', 'decision'],
      registers,
    }),
    userFilterDecisions: createPerCallCounter({
      name: 'meshgate_user_filter_decisions_total',
      help: "Checks of your own (Filter documents) run on a call, by policy (namespace/name), decision (allow, deny, edit, shadow_deny, failed_deny, failed_allow) and code (the check's deny code, or the failure: threw, timeout, memory, bad_result, unsettled, not_compiled).",
      labelNames: ['policy', 'decision', 'code'],
      registers,
    }),
    outlierEjections: new Counter({
      name: 'meshgate_outlier_ejections_total',
      help: 'Endpoints ejected by outlier detection.',
      labelNames: ['destination_service'],
      registers,
    }),
    deprecatedCalls: createPerCallCounter({
      name: 'meshgate_deprecated_calls_total',
      help: 'Outbound calls answered by an endpoint of a deprecated version (Route versions[].deprecated), by destination (name.namespace) and version name.',
      labelNames: ['destination_service', 'version'],
      registers,
    }),
    inFlight: new Gauge({
      name: 'meshgate_requests_in_flight',
      help: 'Calls in flight.',
      labelNames: ['direction'],
      registers,
      collect() {
        if (!opts.inFlight) return;
        this.set({ direction: 'inbound' }, opts.inFlight('inbound'));
        this.set({ direction: 'outbound' }, opts.inFlight('outbound'));
      },
    }),
    tlsHandshakeErrors: new Counter({
      name: 'meshgate_tls_handshake_errors_total',
      help: 'Connections refused by mutual TLS, by listener and reason (no_client_certificate, untrusted_certificate, certificate_expired, certificate_not_yet_valid, not_a_client_certificate, key_mismatch, unsupported_protocol, foreign_trust_domain, no_spiffe_id, plaintext, handshake_timeout, handshake_failed, reset).',
      labelNames: ['listener', 'reason'],
      registers,
    }),
    connectionsRefused: new Counter({
      name: 'meshgate_connections_refused_total',
      help: 'Connections refused on accept, by listener and reason: max_connections (limits.maxConnections), max_connections_per_source (limits.maxConnectionsPerSource).',
      labelNames: ['listener', 'reason'],
      registers,
    }),
    connectionsClosed: new Counter({
      name: 'meshgate_connections_closed_total',
      help: 'Connections the sidecar closed because the caller abused the protocol, by listener and reason (http2_rapid_reset).',
      labelNames: ['listener', 'reason'],
      registers,
    }),
    policyVersion: new Gauge({
      name: 'meshgate_policy_snapshot_version',
      help: 'The policy snapshot in force: 1 for its version (content digest) and source (server or disk); compare across sidecars for version skew.',
      labelNames: ['version', 'source'],
      registers,
      // Summed over a sidecar's worker processes (src/sidecar/workers/), 1 per version any of them enforces.
      aggregator: 'max',
    }),
    policyPersisted: new Gauge({
      name: 'meshgate_policy_snapshot_persisted',
      help: 'Whether the policy snapshot in force is persisted in policy.stateDir (1) or not (0: writes fail, or the copy found at boot was not trusted); a restart without a policy server needs it. Alert when 0.',
      registers,
      aggregator: 'min',
      collect() {
        const persisted = opts.policyPersisted?.();
        if (persisted === undefined) this.reset();
        else this.set(persisted ? 1 : 0);
      },
    }),
    policyPersistFailures: new Counter({
      name: 'meshgate_policy_snapshot_persist_failures_total',
      help: 'Failed writes of the persisted policy snapshot (policy.stateDir read-only, full, or gone), the check at boot included; retried with backoff.',
      registers,
    }),
    ipBans: new Counter({
      name: 'meshgate_ip_bans_total',
      help: 'Addresses put on the auto-ban list (IPAccessPolicy autoBan).',
      registers,
    }),
    ipBanEvictions: new Counter({
      name: 'meshgate_ip_ban_evictions_total',
      help: 'Entries dropped early because the auto-ban list was full: list=bans (the ban expiring soonest) or list=counters (denial counts).',
      labelNames: ['list'],
      registers,
    }),
    ipBannedAddresses: new Gauge({
      name: 'meshgate_ip_banned_addresses',
      help: 'Addresses on the auto-ban list now.',
      registers,
      collect() {
        this.set(opts.bannedAddresses?.() ?? 0);
      },
    }),
    rateLimitDecisions: createPerCallCounter({
      name: 'meshgate_ratelimit_decisions_total',
      help: 'RateLimitPolicy rules that matched a call, by policy (namespace/name), rule and decision (allowed, limited, shadow_limited, unavailable_denied, unavailable_allowed, fallback_allowed, fallback_limited, delayed, throttle_queue_full, throttle_delay_exceeded, concurrency_exceeded, concurrency_timeout, cancelled).',
      labelNames: ['policy', 'rule', 'decision'],
      registers,
    }),
    rateLimitBucketEvictions: new Counter({
      name: 'meshgate_ratelimit_bucket_evictions_total',
      help: 'Local rate-limit buckets dropped before they were full again because rateLimit.maxLocalBuckets was reached (that caller starts with a full bucket).',
      registers,
    }),
    rateLimitLocalBuckets: new Gauge({
      name: 'meshgate_ratelimit_local_buckets',
      help: 'Local rate-limit buckets in memory now.',
      registers,
      collect() {
        this.set(opts.localBuckets?.() ?? 0);
      },
    }),
    rateLimitInFlight: new Gauge({
      name: 'meshgate_ratelimit_in_flight',
      help: 'Calls holding a slot of a RateLimitPolicy concurrency rule now, by policy (namespace/name) and rule; a rule with none is absent.',
      labelNames: ['policy', 'rule'],
      registers,
      collect() {
        this.reset();
        for (const u of opts.rateLimitUsage?.() ?? []) if (u.inFlight > 0) this.set({ policy: u.owner.policy, rule: u.owner.rule }, u.inFlight);
      },
    }),
    rateLimitQueued: new Gauge({
      name: 'meshgate_ratelimit_queued',
      help: 'Calls waiting now in the queues of a RateLimitPolicy throttle or concurrency rule, by policy (namespace/name) and rule; a rule with none is absent.',
      labelNames: ['policy', 'rule'],
      registers,
      collect() {
        this.reset();
        for (const u of opts.rateLimitUsage?.() ?? []) if (u.queued > 0) this.set({ policy: u.owner.policy, rule: u.owner.rule }, u.queued);
      },
    }),
    bufferedBodyBytes: new Gauge({
      name: 'meshgate_buffered_body_bytes',
      help: 'Request body bytes held in memory while filters read them; calls needing more than limits.maxBufferedBodies allows get 503 sidecar.overloaded.',
      registers,
      collect() {
        this.set(opts.bufferedBodyBytes?.() ?? 0);
      },
    }),
    outboundPassthrough: new Counter({
      name: 'meshgate_outbound_passthrough_total',
      help: 'Captured outbound traffic sent to its original destination without mesh routing (outboundTrafficPolicy ALLOW_ANY): reason=unregistered_host (one per HTTP call), not_http or server_first (one per connection).',
      labelNames: ['reason'],
      registers,
    }),
    interceptionRefusals: new Counter({
      name: 'meshgate_interception_refusals_total',
      help: 'Captured connections (or HTTP calls) refused: inbound not_app_port; outbound registry_only (REGISTRY_ONLY), loop (the destination is the sidecar itself), connect_failed (the original destination did not answer).',
      labelNames: ['direction', 'reason'],
      registers,
    }),
    responseCacheLookups: createPerCallCounter({
      name: 'meshgate_response_cache_lookups_total',
      help: 'Calls a Route responses[].cache rule covered, by rule (namespace/route#rule) and result: hit (answered from the cache), miss (sent to the app), bypass (sent to the app, not looked up; reason says why).',
      labelNames: ['rule', 'result', 'reason'],
      registers,
    }),
    responseCacheStores: createPerCallCounter({
      name: 'meshgate_response_cache_stores_total',
      help: 'App answers to missed calls, by rule and result: stored, or skipped with the reason (status, no_store, private, no_cache, set_cookie, vary_star, no_freshness, stale, too_large, copy_budget, trailers, head).',
      labelNames: ['rule', 'result', 'reason'],
      registers,
    }),
    responseCacheEvictions: new Counter({
      name: 'meshgate_response_cache_evictions_total',
      help: 'Cached responses dropped to stay within limits.maxResponseCache (least recently used first).',
      registers,
    }),
    responseCacheBytes: new Gauge({
      name: 'meshgate_response_cache_bytes',
      help: 'Bytes the inbound response cache holds now (bodies, headers and keys), at most limits.maxResponseCache.',
      registers,
    }),
    certExpiry: new Gauge({
      name: 'meshgate_cert_expiry_timestamp_seconds',
      help: 'notAfter of the workload certificate, in seconds since the epoch; absent without one.',
      registers,
      // Over a sidecar's worker processes: the one that would expire first.
      aggregator: 'min',
      collect() {
        const notAfter = opts.certNotAfterMs?.();
        if (notAfter === undefined) this.reset();
        else this.set(notAfter / 1000);
      },
    }),
  };
}
