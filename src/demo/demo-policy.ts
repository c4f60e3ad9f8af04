import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseConfigText } from '../config/load.ts';
import { policyServerConfigSchema } from '../config/policy-server-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import { startPolicyServer } from '../policy-server/policy-server.ts';
import type { Logger } from '../telemetry/logger.ts';
import { noTracing } from '../telemetry/tracing.ts';
import type { DemoCa } from './demo-ca.ts';

/** What the demo mesh allows: frontend may read and create orders (two creations a minute); nothing else reaches orders. */
const DEMO_POLICY = `apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: frontend-to-orders, namespace: default }
spec:
  selector: { services: [orders] }
  action: ALLOW
  rules:
    - name: orders-api
      from: [{ principals: ["spiffe://cluster.local/ns/default/sa/frontend"] }]
      to: [{ methods: [GET, POST], paths: ["/orders", "/orders/*"] }]
---
apiVersion: meshgate.dev/v1
kind: RateLimitPolicy
metadata: { name: order-writes, namespace: default }
spec:
  selector: { services: [orders] }
  rules:
    - name: per-caller
      match: { methods: [POST], paths: ["/orders"] }
      key: [source.principal]
      limit: { requests: 2, per: 1m }
`;

export interface DemoPolicyServer {
  readonly address: string;
  /** Where policies live; writing a file here changes what sidecars enforce. */
  readonly folder: string;
  close(): Promise<void>;
}

/** A policy server for the demo, in the CA's temp folder, with one AuthorizationPolicy and one RateLimitPolicy. */
export async function startDemoPolicyServer(ca: DemoCa, deps: { clock: Clock; random: Random; logger: Logger }): Promise<DemoPolicyServer> {
  const folder = path.join(ca.dir, 'policies');
  await mkdir(path.join(folder, 'default'), { recursive: true });
  await writeFile(path.join(folder, 'default', 'frontend-to-orders.yaml'), DEMO_POLICY);
  const config = parseConfigText(
    JSON.stringify({
      identity: {
        trustDomain: 'cluster.local',
        ca: { address: ca.address, trustBundleFile: ca.trustBundleFile, serverName: 'localhost' },
        tokenFile: await ca.tokenFile('meshgate-system', 'policy-server'),
      },
      listen: { address: '127.0.0.1', port: 0 },
      admin: { address: '127.0.0.1', port: 0 },
      policies: { folder },
      registry: { shared: { enabled: false } },
      adminApi: { audit: { file: path.join(ca.dir, 'policy-audit.jsonl') } },
      log: { level: 'warn' },
    }),
    'demo:policy-server.yaml',
    policyServerConfigSchema,
  );
  const server = await startPolicyServer(config, { ...deps, configDir: ca.dir, defaultServerId: 'demo', tracing: noTracing('meshgate-policy-server') });
  return { address: `127.0.0.1:${server.grpcPort}`, folder, close: () => server.close() };
}
