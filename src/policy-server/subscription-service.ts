import * as grpc from '@grpc/grpc-js';
import { ROOT_CONTEXT, SpanKind } from '@opentelemetry/api';
import type { Clock } from '../core/clock.ts';
import { grpcPeerIdentity } from '../identity/grpc-peer-identity.ts';
import type { ReceivedSubscribeRequest, WireSnapshot } from '../policy/policy-api.ts';
import type { WorkloadRef } from '../policy/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { HeaderCarrier, Tracing } from '../telemetry/tracing.ts';
import type { SubscriberDirectory, SubscriberView } from './contracts.ts';
import type { PolicyServerMetrics } from './policy-server-metrics.ts';
import type { ServiceRegistry } from './service-registry.ts';
import type { BuiltSnapshot, SnapshotBuilder } from './snapshot-builder.ts';

export interface SubscriptionOptions {
  readonly trustDomain: string;
  readonly serverId: string;
  readonly helloTimeoutMs: number;
  readonly maxSubscribers: number;
  /** Changes within this window are pushed together. */
  readonly debounceMs: number;
}

export interface SubscriptionDeps {
  readonly builder: SnapshotBuilder;
  readonly registry: ServiceRegistry;
  readonly metrics: PolicyServerMetrics;
  readonly logger: Logger;
  readonly clock: Clock;
  /** A span per push round and per subscriber's first snapshot; none when absent or off. */
  readonly tracing?: Tracing;
}

/** What is written to a stream: a message, or the same message already encoded (see policy-server.ts). */
export type SnapshotWrite = WireSnapshot | Buffer;
export type SubscribeCall = grpc.ServerDuplexStream<ReceivedSubscribeRequest, SnapshotWrite>;

export interface SubscriptionService extends SubscriberDirectory {
  /** The PolicyDiscovery/Subscribe handler. */
  subscribe(call: SubscribeCall): void;
  /** Recomputes every subscriber's snapshot after the debounce window (the registry changed). */
  changed(): void;
  /** Recomputes every subscriber's snapshot now and queues the changed ones (the documents changed; the store debounced already). */
  pushNow(): void;
  /** Ends every stream with UNAVAILABLE, so sidecars reconnect (to another replica) at once. */
  closeAll(reason: string): void;
}

interface Subscriber {
  readonly streamId: string;
  readonly call: SubscribeCall;
  readonly workload: WorkloadRef;
  readonly spiffeId: string;
  readonly sidecarId: string;
  readonly address: string;
  readonly destinations: readonly string[] | undefined;
  readonly connectedAt: string;
  /** The last version queued on the stream, and a few before it (an Ack may trail several pushes). */
  sent: string[];
  ackedVersion: string | undefined;
  lastNack: SubscriberView['lastNack'];
  /** write() returned false: wait for 'drain', then send whatever is current. */
  blocked: boolean;
}

const MAX_SIDECAR_ID = 253;
const MAX_LABELS = 64;
const MAX_DESTINATIONS = 1_000;
const MAX_NACK_ERRORS = 100;
const MAX_NACK_TEXT = 1_000;
const RECENT_VERSIONS = 8;
const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$/;
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$/;
const DNS_LABEL = '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?';
const DESTINATION = new RegExp(`^${DNS_LABEL}\\.${DNS_LABEL}$`);

/**
 * The PolicyDiscovery stream. A subscriber's workload is its client
 * certificate's SPIFFE ID (namespace, and service = service account), never a
 * field it sends; the TLS layer already refused peers without a certificate
 * that chains to the trust bundle, and this checks the trust domain on top.
 *
 * Invariant: a subscriber is in `subscribers` (and its endpoint in the
 * registry) exactly from its accepted Hello until its stream ends, however it
 * ends (client end, cancel, error, server shutdown).
 *
 * Pushes: every change marks all snapshots dirty; after the debounce window
 * each (workload, destinations) group is compiled once and written to the
 * streams whose last sent version differs. A stream whose buffer is full is
 * skipped and gets the then-current snapshot on 'drain': a slow sidecar
 * receives fewer, newer snapshots instead of a growing queue.
 */
export function createSubscriptionService(opts: SubscriptionOptions, deps: SubscriptionDeps): SubscriptionService {
  const { builder, registry, metrics, clock } = deps;
  const log = deps.logger.child({ component: 'subscriptions' });
  const tracer = deps.tracing?.tracer;
  const subscribers = new Map<string, Subscriber>();
  let nextStream = 0;
  let pushTimer: NodeJS.Timeout | undefined;
  let closing = false;

  function refuse(call: SubscribeCall, code: grpc.status, reason: string, details: string): void {
    metrics.refusedStreams.inc({ reason });
    log.info({ peer: call.getPeer(), reason, details }, 'subscription refused');
    call.emit('error', { code, details });
  }

  /** true when the snapshot was queued on the stream. */
  function send(sub: Subscriber, built: BuiltSnapshot): boolean {
    if (sub.sent[sub.sent.length - 1] === built.version) return false;
    if (sub.blocked) return false;
    sub.sent.push(built.version);
    if (sub.sent.length > RECENT_VERSIONS) sub.sent.shift();
    metrics.pushes.inc();
    const ok = sub.call.write(built.encoded ?? built.message);
    if (!ok) {
      sub.blocked = true;
      sub.call.once('drain', () => {
        sub.blocked = false;
        if (subscribers.has(sub.streamId)) send(sub, builder.build(sub.workload, sub.destinations));
      });
    }
    return true;
  }

  function pushAll(): void {
    clearTimeout(pushTimer);
    pushTimer = undefined;
    const started = clock.monotonic();
    // A root span per push round: how many streams got a new snapshot, and how long compiling them took.
    const span = tracer?.startSpan('policy push', { kind: SpanKind.INTERNAL, root: true, attributes: { 'meshgate.policy.server_id': opts.serverId } }, ROOT_CONTEXT);
    builder.invalidate();
    let pushed = 0;
    const versions = new Set<string>();
    for (const sub of subscribers.values()) {
      const built = builder.build(sub.workload, sub.destinations);
      if (send(sub, built)) {
        pushed++;
        versions.add(built.version);
      }
    }
    metrics.recomputeDuration.observe((clock.monotonic() - started) / 1000);
    if (span) {
      span.setAttributes({ 'meshgate.policy.subscribers': subscribers.size, 'meshgate.policy.pushed': pushed, 'meshgate.policy.versions': versions.size });
      span.end();
    }
  }

  function changed(): void {
    if (pushTimer || closing) return;
    pushTimer = setTimeout(pushAll, opts.debounceMs);
  }

  registry.onChange(() => {
    metrics.registryEndpoints.set(registry.services().reduce((n, s) => n + s.endpoints.length, 0));
    changed();
  });

  function validateHello(hello: NonNullable<ReceivedSubscribeRequest['hello']>): string | undefined {
    if (!hello.sidecarId || hello.sidecarId.length > MAX_SIDECAR_ID || !/^[\x21-\x7e]+$/.test(hello.sidecarId)) {
      return `hello.sidecar_id: expected 1 to ${MAX_SIDECAR_ID} printable ASCII characters without spaces`;
    }
    if (hello.address !== '' && (hello.address.length > 261 || !HOST_PORT.test(hello.address) || Number(hello.address.slice(hello.address.lastIndexOf(':') + 1)) > 65535)) {
      return `hello.address: expected host:port, got ${JSON.stringify(hello.address.slice(0, 80))}`;
    }
    const labels = Object.entries(hello.labels ?? {});
    if (labels.length > MAX_LABELS) return `hello.labels: at most ${MAX_LABELS} labels, got ${labels.length}`;
    for (const [k, v] of labels) {
      if (!LABEL_KEY.test(k)) return `hello.labels: key ${JSON.stringify(k.slice(0, 80))} is not a label name`;
      if (v.length > 253) return `hello.labels.${k}: value longer than 253 characters`;
    }
    if ((hello.destinations ?? []).length > MAX_DESTINATIONS) return `hello.destinations: at most ${MAX_DESTINATIONS} entries`;
    for (const d of hello.destinations ?? []) if (!DESTINATION.test(d)) return `hello.destinations: expected name.namespace, got ${JSON.stringify(d.slice(0, 80))}`;
    if (hello.currentVersion.length > 128) return 'hello.current_version: longer than 128 characters';
    return undefined;
  }

  function onAck(sub: Subscriber, ack: NonNullable<ReceivedSubscribeRequest['ack']>): void {
    if (!sub.sent.includes(ack.version)) {
      log.debug({ sidecarId: sub.sidecarId, version: ack.version }, 'ack for a version not sent on this stream; ignored');
      return;
    }
    if (ack.accepted) {
      sub.ackedVersion = ack.version;
      return;
    }
    const errors = (ack.errors ?? []).slice(0, MAX_NACK_ERRORS).map((e) => ({
      document: String(e.document ?? '').slice(0, MAX_NACK_TEXT),
      field: String(e.field ?? '').slice(0, MAX_NACK_TEXT),
      reason: String(e.reason ?? '').slice(0, MAX_NACK_TEXT),
    }));
    const repeated = sub.lastNack?.version === ack.version;
    sub.lastNack = { version: ack.version, errors, at: new Date(clock.now()).toISOString() };
    metrics.nacks.inc({ namespace: sub.workload.namespace, service: sub.workload.service });
    if (!repeated) {
      log.warn(
        { sidecarId: sub.sidecarId, spiffeId: sub.spiffeId, version: ack.version, errors: errors.slice(0, 10), errorCount: errors.length, ackedVersion: sub.ackedVersion ?? null },
        'sidecar refused a snapshot (NACK); it keeps enforcing its previous version',
      );
    }
  }

  function subscribe(call: SubscribeCall): void {
    if (closing) return refuse(call, grpc.status.UNAVAILABLE, 'shutting_down', 'policy server is shutting down');
    const peer = grpcPeerIdentity(call.getAuthContext(), opts.trustDomain, clock);
    if (!peer || !peer.ok) {
      return refuse(call, grpc.status.UNAUTHENTICATED, 'no_peer_identity', peer ? peer.message : `no verified client certificate of trust domain ${opts.trustDomain}`);
    }
    if (subscribers.size >= opts.maxSubscribers) {
      return refuse(call, grpc.status.RESOURCE_EXHAUSTED, 'too_many_subscribers', `this replica serves at most ${opts.maxSubscribers} subscribers; try another`);
    }
    const streamId = `${opts.serverId}#${++nextStream}`;
    const workload: WorkloadRef = { namespace: peer.namespace, service: peer.serviceAccount };
    let sub: Subscriber | undefined;
    let ended = false;

    const helloTimer = setTimeout(() => {
      if (!sub && !ended) refuse(call, grpc.status.DEADLINE_EXCEEDED, 'hello_timeout', `no Hello within ${opts.helloTimeoutMs} ms`);
    }, opts.helloTimeoutMs);

    const cleanup = (): void => {
      if (ended) return;
      ended = true;
      clearTimeout(helloTimer);
      if (!sub) return;
      subscribers.delete(streamId);
      metrics.subscribers.set(subscribers.size);
      registry.unregister(streamId);
      log.info({ sidecarId: sub.sidecarId, spiffeId: sub.spiffeId, address: sub.address || null, ackedVersion: sub.ackedVersion ?? null }, 'subscriber left');
    };
    call.on('cancelled', cleanup);
    call.on('error', cleanup);
    call.on('close', cleanup);
    call.on('finish', cleanup);
    call.on('end', () => {
      // The sidecar half-closed: finish our side too (status OK).
      cleanup();
      call.end();
    });

    call.on('data', (req: ReceivedSubscribeRequest) => {
      if (ended) return;
      if (!sub) {
        if (!req.hello || req.message === 'ack') {
          clearTimeout(helloTimer);
          return refuse(call, grpc.status.INVALID_ARGUMENT, 'bad_hello', 'the first message must be a Hello');
        }
        const problem = validateHello(req.hello);
        if (problem) {
          clearTimeout(helloTimer);
          return refuse(call, grpc.status.INVALID_ARGUMENT, 'bad_hello', problem);
        }
        clearTimeout(helloTimer);
        const hello = req.hello;
        const destinations = hello.destinations.length > 0 ? [...new Set(hello.destinations)].sort() : undefined;
        sub = {
          streamId,
          call,
          workload,
          spiffeId: peer.spiffeId,
          sidecarId: hello.sidecarId,
          address: hello.address,
          destinations,
          connectedAt: new Date(clock.now()).toISOString(),
          sent: [],
          ackedVersion: undefined,
          lastNack: undefined,
          blocked: false,
        };
        subscribers.set(streamId, sub);
        metrics.subscribers.set(subscribers.size);
        if (hello.address) {
          // Registers first, so the first snapshot already lists this endpoint where it belongs.
          registry.register({
            streamId,
            sidecarId: hello.sidecarId,
            spiffeId: peer.spiffeId,
            namespace: workload.namespace,
            service: workload.service,
            address: hello.address,
            labels: { ...hello.labels },
            serverId: opts.serverId,
          });
        }
        const joinSpan = tracer?.startSpan(
          'policy subscribe',
          {
            kind: SpanKind.SERVER,
            attributes: {
              'rpc.system': 'grpc',
              'rpc.service': 'meshgate.policy.v1.PolicyDiscovery',
              'rpc.method': 'Subscribe',
              'meshgate.spiffe_id': peer.spiffeId,
              'meshgate.sidecar_id': hello.sidecarId,
              'meshgate.policy.server_id': opts.serverId,
            },
          },
          deps.tracing!.extract(call.metadata.getMap() as HeaderCarrier),
        );
        const built = builder.build(workload, destinations);
        joinSpan?.setAttributes({ 'meshgate.policy.version': built.version, 'meshgate.policy.current_version': hello.currentVersion });
        joinSpan?.end();
        log.info({ sidecarId: hello.sidecarId, spiffeId: peer.spiffeId, address: hello.address || null, currentVersion: hello.currentVersion || null, version: built.version }, 'subscriber joined');
        send(sub, built);
        return;
      }
      if (req.ack && req.message !== 'hello') onAck(sub, req.ack);
      // A repeated Hello changes nothing: the workload is the certificate's, the endpoint stays as registered.
    });
  }

  return {
    subscribe,
    changed,
    pushNow: pushAll,
    closeAll(reason) {
      closing = true;
      clearTimeout(pushTimer);
      for (const sub of [...subscribers.values()]) sub.call.emit('error', { code: grpc.status.UNAVAILABLE, details: reason });
    },
    subscribers: () =>
      [...subscribers.values()]
        .map(
          (s): SubscriberView => ({
            sidecarId: s.sidecarId,
            workload: s.workload,
            spiffeId: s.spiffeId,
            address: s.address,
            connectedAt: s.connectedAt,
            sentVersion: s.sent[s.sent.length - 1],
            ackedVersion: s.ackedVersion,
            lastNack: s.lastNack,
          }),
        )
        .sort((a, b) => (a.connectedAt < b.connectedAt ? -1 : a.connectedAt > b.connectedAt ? 1 : a.sidecarId < b.sidecarId ? -1 : 1)),
    registry: () => registry.services(),
  };
}
