import path from 'node:path';
import { request } from 'undici';
import { parseConfigText } from '../config/load.ts';
import { sidecarConfigSchema } from '../config/sidecar-schema.ts';
import { systemClock } from '../core/clock.ts';
import type { RunningSidecar } from '../sidecar/sidecar.ts';
import { startSidecar } from '../sidecar/sidecar.ts';
import { createLogger } from '../telemetry/logger.ts';
import { noTracing } from '../telemetry/tracing.ts';
import { startDemoCa } from './demo-ca.ts';
import { startDemoPolicyServer } from './demo-policy.ts';
import { startEchoApp } from './echo-app.ts';

interface DemoCall {
  readonly from: string;
  readonly to: string;
  readonly method: string;
  readonly path: string;
  readonly body?: string;
}

/**
 * `meshgate demo`: a whole mesh on loopback with embedded defaults. Each app
 * sits behind its own sidecar; the demo plays each app's outgoing calls through
 * that app's outbound listener, so every call crosses two sidecars.
 */
export async function runDemo(rounds: number): Promise<number> {
  const logger = createLogger({ level: 'error', name: 'demo' });
  const ca = await startDemoCa({ clock: systemClock, logger });
  const policyServer = await startDemoPolicyServer(ca, { clock: systemClock, random: Math.random, logger });
  const apps = { frontend: await startEchoApp('frontend'), orders: await startEchoApp('orders') };
  const sidecars: Record<string, RunningSidecar> = {};
  // No static services: each sidecar registers with the policy server and learns the others from it.
  for (const name of ['orders', 'frontend'] as const) {
    const config = parseConfigText(
      JSON.stringify({
        workload: { service: name, namespace: 'default' },
        listeners: { outbound: { port: 0 }, inbound: { address: '127.0.0.1', port: 0 }, admin: { port: 0 } },
        inbound: { app: `http://127.0.0.1:${apps[name].port}` },
        log: { level: 'warn', accessLog: false },
        mtls: { mode: 'STRICT' },
        identity: {
          trustDomain: 'cluster.local',
          ca: { address: ca.address, trustBundleFile: ca.trustBundleFile, serverName: 'localhost' },
          tokenFile: await ca.tokenFile('default', name),
        },
        policy: { servers: [policyServer.address], stateDir: path.join(ca.dir, `state-${name}`) },
      }),
      `demo:${name}`,
      sidecarConfigSchema,
    );
    sidecars[name] = await startSidecar(config, { logger, clock: systemClock, random: Math.random, tracing: noTracing(`${name}.default`) });
  }
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);
  out(`meshgate demo: a CA (${ca.address}), a policy server (${policyServer.address}) and two echo services,`);
  out('each behind a sidecar on 127.0.0.1: mutual TLS STRICT, policy: frontend may GET/POST /orders on orders');
  for (const [name, s] of Object.entries(sidecars)) {
    const cert = s.identity?.manager.current()?.facts;
    out(`  ${name.padEnd(9)} app :${apps[name as keyof typeof apps].port}  outbound :${s.outbound.port}  inbound :${s.inbound.port}  admin http://127.0.0.1:${s.admin.port}/metrics`);
    out(`  ${''.padEnd(9)} ${cert?.spiffeId ?? 'no identity'}  serial ${cert?.serial.slice(0, 12) ?? '-'}…  expires ${cert?.notAfter.toISOString() ?? '-'}`);
  }
  out('');
  await untilRoutable(sidecars.frontend!.outbound.port, 'orders');
  const plan: DemoCall[] = [
    { from: 'frontend', to: 'orders', method: 'GET', path: '/orders/42' },
    { from: 'frontend', to: 'orders.default', method: 'POST', path: '/orders', body: '{"item":"book","qty":1}' },
    { from: 'frontend', to: 'orders.default.svc.cluster.local:80', method: 'GET', path: '/orders?limit=5' },
    { from: 'frontend', to: 'orders', method: 'DELETE', path: '/orders/42' },
    { from: 'frontend', to: 'orders', method: 'GET', path: '/admin/users' },
    { from: 'frontend', to: 'payments', method: 'GET', path: '/charge' },
    { from: 'frontend', to: 'orders', method: 'POST', path: '/orders', body: '{"item":"pen","qty":2}' },
    { from: 'frontend', to: 'orders', method: 'POST', path: '/orders', body: '{"item":"ink","qty":1}' }, // third creation this minute: 429
  ];
  let failures = 0;
  for (let i = 0; i < rounds; i++) {
    const call = plan[i % plan.length]!;
    const started = performance.now();
    try {
      const res = await request(`http://127.0.0.1:${sidecars[call.from]!.outbound.port}${call.path}`, {
        method: call.method,
        headers: { host: call.to, 'content-type': 'application/json' },
        body: call.body,
      });
      const text = await res.body.text();
      const ms = (performance.now() - started).toFixed(1);
      const reason = res.headers['x-meshgate-reason'];
      const detail = reason ? `answered by meshgate: ${String(reason)}${ruleOf(text)}` : summarize(text);
      out(`${call.from} -> ${call.to.padEnd(36)} ${call.method.padEnd(6)} ${call.path.padEnd(16)} ${res.statusCode} ${ms.padStart(6)} ms  ${detail}`);
    } catch (err) {
      failures++;
      out(`${call.from} -> ${call.to} ${call.method} ${call.path} failed: ${(err as Error).message}`);
    }
  }
  const plain = await request(`http://127.0.0.1:${sidecars.orders!.inbound.port}/orders/42`).then(
    (r) => `answered ${r.statusCode}`,
    (e: Error) => `refused (${(e as { code?: string }).code ?? e.message})`,
  );
  out(`plaintext caller -> orders inbound directly (no certificate): ${plain}`);
  out('');
  const metrics = await request(`http://127.0.0.1:${sidecars.orders!.admin.port}/metrics`).then((r) => r.body.text());
  const line = metrics.split('\n').find((l) => l.startsWith('meshgate_requests_total{direction="inbound"'));
  out(`orders sidecar /metrics: ${line ?? '(no inbound calls counted)'}`);
  await Promise.all(Object.values(sidecars).map((s) => s.drain(1_000)));
  await Promise.all(Object.values(apps).map((a) => a.close()));
  await policyServer.close();
  await ca.close();
  return failures === 0 ? 0 : 1;
}

/** Waits (bounded) until the registry push has told `port`'s sidecar where `service` is. */
async function untilRoutable(port: number, service: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const res = await request(`http://127.0.0.1:${port}/orders/0`, { headers: { host: service } });
    await res.body.dump();
    if (res.headers['x-meshgate-reason'] !== 'route.not_found') return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function ruleOf(text: string): string {
  try {
    const body = JSON.parse(text) as { rule?: string; decision_id?: string };
    return body.rule ? ` (rule ${body.rule})` : '';
  } catch {
    return '';
  }
}

function summarize(text: string): string {
  try {
    const seen = JSON.parse(text) as { service: string; host: string; requestId: string; bodyBytes: number; caller?: string };
    return `${seen.service} saw caller=${seen.caller ?? '-'} host=${seen.host} body=${seen.bodyBytes}B`;
  } catch {
    return text.slice(0, 60);
  }
}
