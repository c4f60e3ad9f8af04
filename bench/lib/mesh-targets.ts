import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ECHO_BODY } from './echo-body.ts';
import { probe } from './http-probe.ts';
import type { MeshCheckout } from './mesh-parts.ts';
import { startControlPlane, startMeshSidecar } from './mesh-parts.ts';
import type { MeshRequest } from './mesh-policy.ts';
import { NAMESPACE } from './mesh-policy.ts';
import { startNodeServer } from './node-server.ts';
import type { Child } from './processes.ts';
import type { OnRowStarted } from './row-processes.ts';
import type { Target, TargetStart } from './target.ts';
import { startMeshgateSidecar } from './target-meshgate.ts';

/*
 * bench:mesh rows that run meshgate, and the wrapper that gives every row the
 * same request.
 *
 *  - mesh / mesh-all-filters: the path as deployed. A local OTLP sink
 *    (servers/otlp-sink.ts), `meshgate ca`, `meshgate policy-server` on a
 *    folder, then the orders sidecar (app: the echo upstream) and the
 *    frontend sidecar, both mTLS STRICT with certificates from the CA, access
 *    log on (stdout, read by the harness as a container runtime would) and
 *    1% of traces exported. The load goes to the frontend's outbound listener
 *    (`host: orders`), over mTLS to orders' inbound listener, then to the app.
 *  - meshgate-one-hop: one sidecar, inbound listener, plaintext, no policy
 *    section, access log off (the `meshgate-inbound` row of `npm run bench`).
 */

export interface MeshRowOptions {
  readonly id: string;
  readonly label: string;
  /** The policy folder (path -> YAML). */
  readonly policyFiles: Readonly<Record<string, string>>;
  readonly onStarted: OnRowStarted;
  readonly log: (line: string) => void;
  /**
   * How often the two sidecars are started (each start timed; the last pair is measured): one start on a
   * busy 2-core VM swings by a fifth, so the start-up verdict reads the median of each sidecar's starts.
   */
  readonly startups: number;
  /** Whose `bin/meshgate.js` runs the row (bench:pair's baseline); default: this checkout. */
  readonly checkout?: MeshCheckout;
}

export function createMeshTarget(options: MeshRowOptions): Target {
  return {
    id: options.id,
    label: options.label,
    start: async (context): Promise<TargetStart> => {
      if (!existsSync(join(context.repoRoot, 'bin', 'meshgate.js'))) return { ok: false, reason: 'bin/meshgate.js not found' };
      const children: Child[] = [];
      const stop = async (): Promise<void> => {
        await Promise.all(children.map((c) => c.stop()));
      };
      try {
        const sink = await startNodeServer(context.group, 'otlp-sink', 'otlp-sink.ts', [], context.startTimeoutMs);
        children.push(sink.child);
        const plane = await startControlPlane(context.group, {
          leafTtl: '24h',
          maxLeafTtl: '24h',
          policyFiles: options.policyFiles,
          startTimeoutMs: context.startTimeoutMs,
          log: options.log,
          ...(options.checkout ? { checkout: options.checkout } : {}),
        });
        children.push(plane.ca, plane.policyServer);
        const extra = {
          log: { level: 'warn', accessLog: true },
          telemetry: { tracing: { exporter: 'otlp-http', endpoint: `http://127.0.0.1:${sink.port}`, samplingRatio: 0.01 } },
          // Idle at stop time: no need for the default 15 s of draining.
          drain: { timeout: '1s' },
        };
        const ordersReady: number[] = [];
        const frontendReady: number[] = [];
        // Each start is a new pod's: no snapshot on disk from the start before (its registry would name the stopped orders).
        const fresh = { extra, freshState: true };
        for (let i = 1; ; i++) {
          // One after the other: each start-up is timed alone.
          const orders = await startMeshSidecar(context.group, plane, { name: 'orders', namespace: NAMESPACE, app: context.upstreamUrl, appProtocol: 'auto', ...fresh });
          children.push(orders.child);
          // frontend's own app is never called; the upstream stands in so /ready can check one.
          const frontend = await startMeshSidecar(context.group, plane, { name: 'frontend', namespace: NAMESPACE, app: context.upstreamUrl, appProtocol: 'auto', ...fresh });
          children.push(frontend.child);
          ordersReady.push(orders.readyMs);
          frontendReady.push(frontend.readyMs);
          options.log(`${options.id}: ready in ${Math.round(orders.readyMs)} ms (orders), ${Math.round(frontend.readyMs)} ms (frontend)`);
          if (i < options.startups) {
            await Promise.all([orders.child.stop(), frontend.child.stop()]);
            children.splice(children.indexOf(orders.child), 1);
            children.splice(children.indexOf(frontend.child), 1);
            continue;
          }
          await options.onStarted([
            { name: 'frontend', pgid: frontend.pid, role: 'proxy', readyMs: frontendReady },
            { name: 'orders', pgid: orders.pid, role: 'proxy', readyMs: ordersReady },
            { name: 'ca', pgid: plane.ca.process.pid!, role: 'support' },
            { name: 'policy-server', pgid: plane.policyServer.process.pid!, role: 'support' },
            { name: 'otlp-sink', pgid: sink.child.process.pid!, role: 'support' },
          ]);
          return { ok: true, started: { url: `http://127.0.0.1:${frontend.outbound}/`, headers: {}, stop } };
        }
      } catch (err) {
        await stop();
        throw err;
      }
    },
  };
}

/** The plaintext one-hop sidecar, started `startups` times (each start-up timed; the last one is measured). */
export function createOneHopTarget(onStarted: OnRowStarted, startups: number): Target {
  return {
    id: 'meshgate-one-hop',
    label: 'meshgate inbound, one hop, plaintext, no policy',
    start: async (context): Promise<TargetStart> => {
      const readyMs: number[] = [];
      for (let i = 1; ; i++) {
        const start = await startMeshgateSidecar(context, 'inbound', {}, { path: '/ready', pollMs: 5 });
        if (!start.ok) return start;
        readyMs.push(start.started.readyMs!);
        if (i < startups) {
          await start.started.stop();
          continue;
        }
        await onStarted([{ name: 'sidecar', pgid: start.started.pgid!, role: 'proxy', readyMs }]);
        return start;
      }
    },
  };
}

/**
 * Gives a row the bench's request (path, method, headers, body) and, once
 * started, sends it until it gets the upstream's answer (a frontend sidecar
 * learns where orders is from the policy server's registry shortly after it
 * is ready), within the start timeout; the harness's pre-flight then reports
 * a row that never got there. `reportAs`: a row whose target does not report
 * its processes is one proxy process under this name (nginx).
 */
export function withRequest(target: Target, request: MeshRequest, reportAs?: { readonly name: string; readonly onStarted: OnRowStarted }): Target {
  return {
    id: target.id,
    label: target.label,
    start: async (context): Promise<TargetStart> => {
      const start = await target.start(context);
      if (!start.ok) return start;
      const inner = start.started;
      if (reportAs !== undefined && inner.pgid !== undefined) await reportAs.onStarted([{ name: reportAs.name, pgid: inner.pgid, role: 'proxy' }]);
      const started = { ...inner, url: new URL(request.path, inner.url).href, headers: { ...inner.headers, ...request.headers }, method: request.method, body: request.body };
      const deadline = Date.now() + context.startTimeoutMs;
      while (Date.now() < deadline) {
        const res = await probe(started.url, started.headers, 3000, started).catch(() => undefined);
        if (res?.status === 200 && res.body === ECHO_BODY) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return { ok: true, started };
    },
  };
}
