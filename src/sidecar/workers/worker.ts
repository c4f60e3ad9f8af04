import type { Clock, Random } from '../../core/clock.ts';
import type { WorkloadCredentials } from '../../identity/cert-manager.ts';
import type { LogDrops, Logger } from '../../telemetry/logger.ts';
import type { Tracing } from '../../telemetry/tracing.ts';
import { meshIdentity, workloadSpiffeId } from '../mesh-identity.ts';
import type { SidecarProcess } from '../sidecar.ts';
import { startSidecarProcess } from '../sidecar.ts';
import type { FailureReport, FromWorker, PolicyState, Question, WorkerInit } from './protocol.ts';
import { isToWorker } from './protocol.ts';
import { createRelayedCertificateManager, createRelayedPolicy } from './relayed.ts';

/** The worker's end of the IPC channel: `process` in a cluster worker. */
export type PrimaryChannel = Pick<NodeJS.Process, 'on' | 'send' | 'connected'>;

interface WorkerDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  readonly random: Random;
  readonly tracing: Tracing;
  readonly defaultMetrics: boolean;
  readonly logDrops?: LogDrops;
  /** Once the worker listens and told its primary so (the CLI starts watching for quiet moments to release its heap then). */
  readonly onStarted?: () => void;
}

export interface PrimaryLink {
  /** The primary's first message: config, certificate, policy. */
  readonly init: Promise<WorkerInit>;
  /** Starts the sidecar and serves until drained; resolves with the exit code (1: it could not start, the primary was told why). */
  serve(deps: WorkerDeps): Promise<number>;
  /** Drains and ends serve() (SIGTERM to this worker alone); the primary restarts the slot. */
  stop(): void;
}

/**
 * One worker process: says hello, takes the primary's init, starts the
 * sidecar's data path with the primary's certificate and policy (no admin
 * listener, ports shared with the other workers), then keeps both current
 * and answers the primary's admin questions. It drains when the primary asks
 * or when it is told to stop.
 */
export function connectToPrimary(channel: PrimaryChannel): PrimaryLink {
  /** Resolves once the message left (or could not): the last ones must be out before the process exits. */
  const send = (message: FromWorker): Promise<void> =>
    new Promise((resolve) => {
      // A callback: a closed channel is an error passed here, not an 'error' event that would crash the worker.
      if (channel.connected) channel.send?.(message, undefined, undefined, () => resolve());
      else resolve();
    });
  // What arrived last, whatever state the sidecar is in: a worker starts with the newest, not the init's.
  const latest: { credentials?: WorkloadCredentials; policy?: PolicyState } = {};
  const relay: { install?: (creds: WorkloadCredentials) => void; apply?: (state: PolicyState) => void } = {};
  let running: SidecarProcess | undefined;
  let stopWith: ((timeoutMs: number | undefined) => void) | undefined;
  let stopAsked: number | undefined | null = null; // null: not asked; a number or undefined: the drain timeout
  let resolveInit: (init: WorkerInit) => void = () => {};
  const init = new Promise<WorkerInit>((resolve) => (resolveInit = resolve));

  const answer = async (question: Question): Promise<unknown> => {
    // A worker still starting has served nothing, so it has banned nobody.
    if (!running && question.kind === 'bans') return [];
    if (!running && question.kind === 'unban') return { status: 'not_found' };
    if (!running) throw new Error('starting');
    const api = running.adminApi;
    switch (question.kind) {
      case 'readiness':
        return api.readiness({ skipApp: true }); // the primary probes the app once for all
      case 'configDump': {
        const { config: _config, workload: _workload, ...own } = (await api.configDump()) as Record<string, unknown>;
        return own; // the primary shows the config once
      }
      case 'metrics':
        return running.metrics.registry.getMetricsAsJSON();
      case 'bans':
        return (await api.bans?.list()) ?? [];
      case 'unban':
        return (await api.bans?.remove(question.address)) ?? { status: 'not_found' };
    }
  };

  const stop = (timeoutMs?: number): void => {
    if (stopWith) stopWith(timeoutMs);
    else stopAsked ??= timeoutMs;
  };

  channel.on('message', (message: unknown) => {
    if (!isToWorker(message)) return;
    switch (message.type) {
      case 'meshgate:init':
        latest.credentials = message.init.credentials;
        latest.policy = message.init.policy;
        resolveInit(message.init);
        return;
      case 'meshgate:credentials':
        latest.credentials = message.credentials;
        relay.install?.(message.credentials);
        return;
      case 'meshgate:policy':
        latest.policy = message.policy;
        relay.apply?.(message.policy);
        return;
      case 'meshgate:ask':
        answer(message.question).then(
          (value) => void send({ type: 'meshgate:answer', id: message.id, ok: true, value }),
          (err: unknown) => void send({ type: 'meshgate:answer', id: message.id, ok: false, error: (err as Error).message }),
        );
        return;
      case 'meshgate:drain':
        stop(message.timeoutMs);
        return;
    }
  });
  // No 'disconnect' handler: node:cluster ends a worker whose primary went away at once (fail closed: no worker
  // serves on without the process that renews its certificate and follows the policy).
  void send({ type: 'meshgate:hello' });

  return {
    init,
    stop: () => stop(),
    async serve(deps) {
      const { config, configFile } = await init;
      const { logger, clock } = deps;
      const manager = latest.credentials ? createRelayedCertificateManager(latest.credentials, { clock, logger: logger.child({ component: 'identity' }) }) : undefined;
      relay.install = manager?.install;
      try {
        running = await startSidecarProcess(
          config,
          { ...deps, configFile },
          {
            workers: config.workers,
            identity: (identityConfig, tls) => {
              if (!manager) throw new Error('the primary sent no certificate');
              return meshIdentity(manager, manager.current(), identityConfig, workloadSpiffeId(identityConfig, config.workload), tls);
            },
            policy: (enforcement) => {
              const relayed = createRelayedPolicy(config, enforcement, latest.policy ?? { kind: 'none', distrustedCopy: false }, logger.child({ component: 'policy' }));
              relay.apply = relayed.apply;
              return relayed;
            },
          },
        );
      } catch (err) {
        await send({ type: 'meshgate:failed', error: failureReport(err) });
        return 1;
      }
      const sidecar = running;
      void send({ type: 'meshgate:listening', ports: { outbound: sidecar.outbound.port, inbound: sidecar.inbound.port, edge: sidecar.edge?.port } });
      deps.onStarted?.();
      const timeoutMs = await new Promise<number | undefined>((resolve) => {
        stopWith = resolve;
        if (stopAsked !== null) resolve(stopAsked);
      });
      const { completed } = await sidecar.drain(timeoutMs ?? config.drain.timeout);
      logger.info({ completed }, 'worker drained');
      await send({ type: 'meshgate:drained', completed });
      return 0;
    },
  };
}

function failureReport(err: unknown): FailureReport {
  const e = err as Error & { code?: unknown; address?: unknown; port?: unknown };
  return {
    name: e.name ?? 'Error',
    message: e.message ?? String(err),
    code: typeof e.code === 'string' ? e.code : undefined,
    address: typeof e.address === 'string' ? e.address : undefined,
    port: typeof e.port === 'number' ? e.port : undefined,
  };
}
