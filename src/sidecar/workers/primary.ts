import type { AddressInfo } from 'node:net';
import type { AdminDeps } from '../../admin/admin-server.ts';
import { createAdminServer } from '../../admin/admin-server.ts';
import { resolveSidecarPaths } from '../../config/sidecar-paths.ts';
import type { SidecarConfig } from '../../config/sidecar-schema.ts';
import type { CertificateManager } from '../../identity/cert-manager.ts';
import { createSidecarMetrics } from '../../telemetry/metrics.ts';
import { Counter, Gauge } from '../../telemetry/prom-client.ts';
import { probeApp } from '../app-probe.ts';
import type { SidecarDeps } from '../sidecar.ts';
import { advertisedAddress, describeCertificate, describeConfig } from '../sidecar-facts.ts';
import type { PolicySource } from '../workload-policy.ts';
import { createAggregatedMetrics } from './aggregate-metrics.ts';
import type { ListeningPorts, PolicyState } from './protocol.ts';
import type { Answer } from './worker-pool.ts';
import { createWorkerPool } from './worker-pool.ts';

/** How long the admin listener waits for a worker's answer before counting it as not answering. */
const ASK_TIMEOUT_MS = 2_000;

export interface RunningPrimary {
  readonly outbound: AddressInfo['port'];
  readonly inbound: AddressInfo['port'];
  readonly admin: AddressInfo;
  /** Stops every worker the way a single sidecar drains, then the primary's own loops and admin listener. */
  drain(timeoutMs?: number): Promise<{ completed: boolean }>;
  /** Resolves when a worker keeps failing (restart budget spent): the sidecar must stop. */
  readonly fatal: Promise<Error>;
}

/**
 * The primary of a sidecar with `workers: N` (N > 1). It owns what must be
 * one per pod: the certificate loop (one key, one serial, one CA client), the
 * policy subscription (one ACK per version, one persisted copy) and the
 * admin listener. The workers serve traffic and get each new certificate and
 * each accepted snapshot from here (protocol.ts); a worker starts only with
 * both in hand, so none serves mesh traffic before the first certificate, and
 * with a policy section none serves before the policy state a single sidecar
 * would have when its listeners open (the disk copy, or the onNoPolicy chain).
 */
export async function startSidecarPrimary(loaded: SidecarConfig, deps: SidecarDeps): Promise<RunningPrimary> {
  const config = deps.configDir === undefined ? loaded : resolveSidecarPaths(loaded, deps.configDir);
  const { logger, clock, random } = deps;
  const lifetime = new AbortController();
  let cert: { spiffeId: string; manager: CertificateManager } | undefined;
  let source: PolicySource | undefined;
  let policyState: PolicyState | undefined = config.policy ? { kind: 'none', distrustedCopy: false } : undefined;
  let workerConfig = config;
  let listening: ListeningPorts | undefined;
  let draining = false;

  const metrics = createSidecarMetrics({
    defaultMetrics: deps.defaultMetrics ?? false,
    certNotAfterMs: () => cert?.manager.current()?.facts.notAfter.getTime(),
    policyPersisted: () => source?.persisted(),
    ...(deps.logDrops ? { droppedLogLines: deps.logDrops.lines } : {}),
  });
  const restarts = new Counter({ name: 'meshgate_worker_restarts_total', help: 'Worker processes restarted after one exited (config workers > 1).', registers: [metrics.registry] });
  const pool = createWorkerPool({
    size: config.workers,
    logger,
    clock,
    init: (worker) => ({ worker, config: workerConfig, configFile: deps.configFile, credentials: cert?.manager.current(), policy: policyState }),
    // Port 0 was the OS's choice for the first worker; the others (and restarts) bind the same ports.
    bound: (ports) => (workerConfig = withPorts(workerConfig, ports)),
    exited: (pid) => aggregated.retire(pid),
    restarted: () => restarts.inc(),
  });
  new Gauge({
    name: 'meshgate_workers_ready',
    help: 'Worker processes listening now, of config workers; /ready is 503 while it is below.',
    registers: [metrics.registry],
    collect() {
      this.set(pool.slots().filter((s) => s.state === 'ready').length);
    },
  });
  const aggregated = createAggregatedMetrics({ own: metrics.registry, ask: () => pool.ask({ kind: 'metrics' }, ASK_TIMEOUT_MS), logger });

  const adminApi: AdminDeps = {
    registry: aggregated.registry,
    async readiness(opts) {
      const [appCheck, answers] = await Promise.all([opts?.skipApp ? 'skipped' : probeApp(config.inbound.app, config.inbound.readinessPath, 1_000), pool.ask({ kind: 'readiness' }, ASK_TIMEOUT_MS)]);
      const certificate = !config.identity ? 'disabled' : cert?.manager.valid() ? 'ok' : (cert?.manager.stats().lastError ?? 'waiting for the first certificate');
      const policy = source?.ready();
      const unready = answers.filter((a) => !(a.ok && (a.value as { ready?: boolean }).ready === true)).map(whyUnready);
      const checks = {
        listeners: draining ? 'draining' : listening ? 'ok' : 'starting',
        certificate,
        policy: policy ? (policy.state === 'ok' ? 'ok' : `${policy.state}: ${policy.detail}`) : 'disabled',
        app: appCheck,
        workers: unready.length === 0 ? 'ok' : `${answers.length - unready.length} of ${answers.length} ready; ${unready.join('; ')}`,
      };
      const ready =
        !draining && listening !== undefined && (appCheck === 'ok' || appCheck === 'skipped') && (certificate === 'ok' || certificate === 'disabled') && (policy?.ok ?? true) && unready.length === 0;
      return { ready, checks };
    },
    async configDump() {
      const answers = await pool.ask({ kind: 'configDump' }, ASK_TIMEOUT_MS);
      return {
        workload: config.workload,
        config: describeConfig(config, deps.tracing),
        policy: source?.describe() ?? { source: 'none' },
        certificate: describeCertificate(cert),
        // What each worker holds: the same certificate serial and policy version everywhere, once a change has reached them all.
        workers: pool.slots().map((slot) => {
          const answer = answers.find((a) => a.worker === slot.worker);
          return { ...slot, ...(answer?.ok ? (answer.value as object) : { error: answer?.error }) };
        }),
      };
    },
    bans: {
      // Bans are per worker (each counts the refusals it served): the list is theirs together, each entry naming its worker.
      async list() {
        const answers = everyWorker(await pool.ask({ kind: 'bans' }, ASK_TIMEOUT_MS));
        return answers.flatMap((a) => (a.value as object[]).map((ban) => ({ ...ban, worker: a.worker })));
      },
      async remove(address) {
        const answers = everyWorker(await pool.ask({ kind: 'unban', address }, ASK_TIMEOUT_MS)).map((a) => a.value as { status: string; ban?: unknown });
        const removed = answers.find((r) => r.status === 'removed');
        if (removed) return { status: 'removed', ban: removed.ban };
        return { status: answers.some((r) => r.status === 'invalid') ? 'invalid' : 'not_found' };
      },
    },
  };
  const admin = createAdminServer(adminApi);
  const adminAddress = await admin.listen(config.listeners.admin.port, config.listeners.admin.address);
  // A worker counts the admin port among its own (interception's loop check).
  workerConfig = { ...config, listeners: { ...config.listeners, admin: { ...config.listeners.admin, port: adminAddress.port } } };

  try {
    if (config.identity) {
      const { startCertificateManager } = await import('../workload-identity.ts');
      cert = await startCertificateManager(config.identity, config.workload, { clock, random, logger, signal: lifetime.signal });
      // Key, chain and bundle go to each worker over the IPC channel only; never logged.
      cert.manager.onRotate((credentials) => pool.broadcast({ type: 'meshgate:credentials', credentials }));
    } else {
      logger.warn('mtls.mode is DISABLE: sidecar-to-sidecar traffic is plaintext and carries no identity');
    }
    if (config.policy) {
      const { startPolicySource } = await import('../workload-policy.ts');
      const broadcast = (state: PolicyState): void => {
        policyState = state;
        pool.broadcast({ type: 'meshgate:policy', policy: state });
      };
      source = await startPolicySource(config, {
        credentials: () => cert?.manager.current(),
        metrics,
        clock,
        random,
        logger,
        enforcer: { install: (snapshot) => broadcast({ kind: 'snapshot', snapshot }), distrustCopy: () => broadcast({ kind: 'none', distrustedCopy: true }) },
      });
    } else {
      logger.warn('no policy section: the sidecar enforces no per-call policy (mTLS still applies)');
    }
    const { outbound, inbound, edge } = config.listeners;
    // Fixed ports (as deployed): every worker starts at once. A port 0 (tests) is bound by the first one, then shared.
    listening = await pool.start(outbound.port !== 0 && inbound.port !== 0 && edge?.port !== 0);
    await source?.subscribe(advertisedAddress(config.listeners.inbound.address, listening.inbound), lifetime.signal);
  } catch (err) {
    await pool.drain(0);
    lifetime.abort();
    await admin.close();
    throw err;
  }
  const ports = listening;
  logger.info(
    { outbound: ports.outbound, inbound: ports.inbound, edge: ports.edge, admin: adminAddress.port, mtls: config.mtls.mode, spiffeId: cert?.spiffeId, workers: config.workers },
    'sidecar listening',
  );

  return {
    outbound: ports.outbound,
    inbound: ports.inbound,
    admin: adminAddress,
    fatal: pool.fatal,
    async drain(timeoutMs = config.drain.timeout) {
      draining = true;
      const completed = await pool.drain(timeoutMs);
      lifetime.abort();
      await admin.close();
      return { completed };
    },
  };
}

function withPorts(config: SidecarConfig, ports: ListeningPorts): SidecarConfig {
  const { listeners } = config;
  return {
    ...config,
    listeners: {
      ...listeners,
      outbound: { ...listeners.outbound, port: ports.outbound },
      inbound: { ...listeners.inbound, port: ports.inbound },
      edge: listeners.edge && ports.edge !== undefined ? { ...listeners.edge, port: ports.edge } : listeners.edge,
    },
  };
}

function whyUnready(answer: Answer): string {
  if (!answer.ok) return `worker ${answer.worker}: ${answer.error}`;
  const checks = (answer.value as { checks?: Record<string, string> }).checks ?? {};
  const failing = Object.entries(checks).filter(([, v]) => v !== 'ok' && v !== 'skipped' && v !== 'disabled');
  return `worker ${answer.worker}: ${failing.map(([k, v]) => `${k} ${v}`).join(', ') || 'not ready'}`;
}

/**
 * The answers of every live worker, or an error naming one that did not
 * answer (a partial ban list would mislead). A slot being restarted has no
 * worker, hence no bans: it is left out.
 */
function everyWorker(answers: Answer[]): Array<Answer & { ok: true }> {
  const missing = answers.find((a) => !a.ok && a.pid !== undefined);
  if (missing && !missing.ok) throw new Error(`worker ${missing.worker}: ${missing.error}`);
  return answers.filter((a): a is Answer & { ok: true } => a.ok);
}
