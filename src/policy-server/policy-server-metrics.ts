import { collectProcessMetrics } from '../telemetry/process-metrics.ts';
import { Counter, Gauge, Histogram, Registry } from '../telemetry/prom-client.ts';

export interface PolicyServerMetrics {
  readonly registry: Registry;
  /** state: valid | invalid. Invalid counts documents (or whole files) rejected by validation. */
  readonly documents: Gauge<'state'>;
  readonly subscribers: Gauge;
  /** Snapshots written to subscriber streams. */
  readonly pushes: Counter;
  readonly nacks: Counter<'namespace' | 'service'>;
  /** Streams refused before a snapshot: reason no_peer_identity, hello_timeout, bad_hello, too_many_subscribers. */
  readonly refusedStreams: Counter<'reason'>;
  /** Time to recompute every subscriber's snapshot after a change. */
  readonly recomputeDuration: Histogram;
  readonly registryEndpoints: Gauge;
  /** Writes or reads of the shared registry folder that failed (the replica then serves its own registrations only). */
  readonly registryShareErrors: Counter<'op'>;
  /** The policy folder could not be read (folder missing, permissions). */
  readonly folderErrors: Counter;
  /** store: redis: 1 while Redis answers, 0 while the replica serves its last merged state (degraded). */
  readonly storeConnected: Gauge;
  /** store: redis: failed Redis operations, by op. */
  readonly storeErrors: Counter<'op'>;
}

/** Metrics of one policy-server instance, on a registry of its own (never prom-client's global one). */
export function createPolicyServerMetrics(opts: { defaultMetrics: boolean }): PolicyServerMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectProcessMetrics(registry);
  const registers = [registry];
  return {
    registry,
    documents: new Gauge({
      name: 'meshgate_policy_documents',
      help: 'Policy documents by state: valid (served) or invalid (rejected by validation; a previous valid copy, if any, is still served).',
      labelNames: ['state'],
      registers,
    }),
    subscribers: new Gauge({ name: 'meshgate_policy_subscribers', help: 'Open PolicyDiscovery streams on this replica.', registers }),
    pushes: new Counter({ name: 'meshgate_policy_pushes_total', help: 'Snapshots sent to subscribers.', registers }),
    nacks: new Counter({
      name: 'meshgate_policy_nacks_total',
      help: 'Snapshots a sidecar refused (NACK), by workload.',
      labelNames: ['namespace', 'service'],
      registers,
    }),
    refusedStreams: new Counter({
      name: 'meshgate_policy_refused_streams_total',
      help: 'Subscribe streams ended before a snapshot, by reason: no_peer_identity, hello_timeout, bad_hello, too_many_subscribers.',
      labelNames: ['reason'],
      registers,
    }),
    recomputeDuration: new Histogram({
      name: 'meshgate_policy_recompute_duration_seconds',
      help: "Time to recompute and queue every subscriber's snapshot after a change.",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    }),
    registryEndpoints: new Gauge({ name: 'meshgate_policy_registry_endpoints', help: 'Endpoints in the served registry (static and registered).', registers }),
    registryShareErrors: new Counter({
      name: 'meshgate_policy_registry_share_errors_total',
      help: 'Failed writes (op=write), reads (op=read) or deletions of expired files (op=expire) of the shared registry folder.',
      labelNames: ['op'],
      registers,
    }),
    folderErrors: new Counter({ name: 'meshgate_policy_folder_errors_total', help: 'Scans of the policy folder that failed as a whole (missing folder, permissions).', registers }),
    storeConnected: new Gauge({
      name: 'meshgate_policy_store_connected',
      help: 'store: redis: 1 while Redis answers; 0 while this replica is degraded (serving its last merged registry and documents, admin writes refused).',
      registers,
    }),
    storeErrors: new Counter({
      name: 'meshgate_policy_store_errors_total',
      help: 'store: redis: failed Redis operations by op (connect, publish, renew, read, expire, documents, write, audit).',
      labelNames: ['op'],
      registers,
    }),
  };
}
