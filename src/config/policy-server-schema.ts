import { z } from 'zod';
import { adminApiConfigSchema } from './admin-api-schema.ts';
import { duration } from './durations.ts';
import { sidecarConfigSchema } from './sidecar-schema.ts';
import { roleLogSchema, roleTelemetrySchema } from './telemetry-schema.ts';

/*
 * The policy-server configuration file (`meshgate policy-server --config
 * policy-server.yaml`). Every field is described once, here. Relative paths
 * resolve against the config file's folder, like the CA's.
 */

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const dnsLabel = z.string().regex(LABEL, 'expected a DNS label: lower-case letters, digits and dashes');

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, e.g. 10.0.0.7:15006 or [::1]:443');

const listener = (defaultPort: number, defaultAddress: string) =>
  z.strictObject({
    address: z.string().min(1).default(defaultAddress).describe('Address to bind.'),
    port: z.number().int().min(0).max(65535).default(defaultPort).describe('Port to bind; 0 picks a free port.'),
  });

/**
 * The sidecar's `identity:` section, so both roles are configured alike; only
 * the service account defaults differently. The policy server's own SPIFFE ID
 * is spiffe://<trustDomain>/ns/meshgate-system/sa/<serviceAccount>, and its
 * bootstrap token must name that namespace and service account.
 */
const identity = sidecarConfigSchema.shape.identity.unwrap().extend({
  serviceAccount: dnsLabel
    .default('policy-server')
    .describe('Service account of the policy server in namespace meshgate-system; sidecars expect spiffe://<trustDomain>/ns/meshgate-system/sa/<serviceAccount>.'),
});

const staticEndpoint = z.strictObject({
  address: hostPort.describe('host:port of the endpoint.'),
  labels: z.record(z.string(), z.string()).default({}).describe('Labels used by route subsets (e.g. version: v1).'),
  weight: z.number().int().min(1).max(10000).default(1).describe('Weight for the weighted balancer.'),
});

const staticService = z.strictObject({
  name: dnsLabel.describe('Service name.'),
  namespace: dnsLabel.default('default').describe('Namespace.'),
  endpoints: z.array(staticEndpoint).default([]).describe('Fixed endpoints; endpoints registered by subscribed sidecars of the same service are added to them.'),
  identities: z.array(z.string().startsWith('spiffe://')).default([]).describe('SPIFFE IDs the endpoints may present; empty: spiffe://<trustDomain>/ns/<namespace>/sa/<name>.'),
  external: z.boolean().default(false).describe('Outside the mesh: reached in plaintext, no identity check.'),
});

/**
 * The Redis of `store: redis`: the same client as the sidecars' global rate
 * limits (src/core/redis-client.ts), standalone or through Sentinel.
 */
const redisStore = z.strictObject({
  url: z
    .string()
    .regex(/^rediss?:\/\/[^\s]+$/, 'expected redis://host:port[/db] or rediss:// for TLS')
    .describe(
      "Redis holding the shared registry, the admin API's documents and the audit trail (rediss:// for TLS). With `sentinel`, only the scheme, the database and the credentials of the URL apply. A password belongs in passwordFile, not here.",
    ),
  passwordFile: z.string().optional().describe('File holding the Redis password (AUTH), read at start; never logged.'),
  username: z.string().optional().describe('Redis ACL user name.'),
  caFile: z.string().optional().describe('PEM bundle of the CA that signs the Redis server certificate, for rediss:// with a private CA; the system roots otherwise.'),
  sentinel: z
    .strictObject({
      name: z.string().min(1).describe('Name of the monitored primary (the `sentinel monitor` name).'),
      addresses: z.array(hostPort).min(1).describe('Sentinels, host:port each.'),
      passwordFile: z.string().optional().describe("File holding the Sentinels' own password, if they require one."),
    })
    .optional()
    .describe("Find the primary through Redis Sentinel instead of the URL's host (failover follows the Sentinels)."),
  keyPrefix: z.string().max(64).default('meshgate:ps:').describe('Prefix of every key and channel the policy servers use.'),
  timeout: duration.default(2_000).describe('Time a Redis command may take before the replica counts Redis as unreachable.'),
  lease: duration
    .default(15_000)
    .describe("TTL of the key holding a replica's registered endpoints; renewed every lease/3. A replica killed without closing drops out of the others' registries within one to two leases."),
});

export const policyServerConfigSchema = z
  .strictObject({
    serverId: z.string().min(1).max(253).optional().describe('Name of this replica in snapshots, logs and the shared registry; default `<hostname>-<pid>`.'),
    identity: identity.describe("The policy server's own workload certificate, from `meshgate ca` (obtained and rotated like a sidecar's)."),
    listen: listener(15010, '0.0.0.0').prefault({}).describe('gRPC listener of the PolicyDiscovery API: mutual TLS, client certificate required.'),
    admin: z
      .strictObject({
        address: z.string().min(1).default('127.0.0.1').describe('Address to bind.'),
        port: z.number().int().min(0).max(65535).default(15014).describe('Port to bind; 0 picks a free port.'),
        tls: z
          .boolean()
          .default(false)
          .describe("Serve the admin listener over TLS with the server's workload certificate; client certificates are then optional and identify admin API callers by SPIFFE ID."),
      })
      .prefault({})
      .describe('Admin listener: /live, /ready, /metrics, /config_dump and the admin API (/api/v1/...).'),
    adminApi: adminApiConfigSchema.prefault({}).describe('Admin API: authentication, role bindings, production namespaces, audit log.'),
    policies: z
      .strictObject({
        folder: z
          .string()
          .min(1)
          .describe(
            'Folder of policy documents (`*.yaml`, `*.yml`, any depth; names starting with `.` are ignored), read as `meshgate policy check` reads it. Admin API writes land here as `<namespace>/<kind>-<name>.yaml`.',
          ),
        pollFallback: duration
          .default(2_000)
          .describe('Full rescan of the folder (stat only; changed files re-read), in case file events are missed (network file systems, some container mounts). 0 disables.'),
        settle: duration
          .default(100)
          .describe('A changed or deleted file counts only once it has stayed so for this long, so a file rewritten in place is never served half written. Writes through the admin API do not wait.'),
      })
      .describe('Where policy documents come from.'),
    store: z
      .enum(['folder', 'redis'])
      .default('folder')
      .describe(
        'Where replicas share state. `folder`: the registry through files in registry.shared.folder, admin API writes into policies.folder (one host, or a shared volume). `redis`: the registry, admin API documents and the audit trail in Redis (`redis:`), for replicas that share no disk; policies.folder is then read-only to the server (a ConfigMap).',
      ),
    redis: redisStore.optional().describe('Redis for `store: redis`.'),
    registry: z
      .strictObject({
        static: z.array(staticService).default([]).describe('Services that do not subscribe (outside the mesh, or not yet migrated).'),
        warmup: duration
          .default(45_000)
          .describe(
            "After start, snapshots say the registry is warming up for this long: sidecars registered before a restart may not have rejoined yet, so subscribers keep the endpoints they have and add the ones pushed, instead of dropping services that have not reconnected. Longer than the sidecars' policy.reconnect.max (30s by default). 0 disables.",
          ),
        shared: z
          .strictObject({
            enabled: z.boolean().default(true).describe("Publish this replica's registered endpoints to a shared folder and read the other replicas', so every replica serves the same registry."),
            folder: z.string().min(1).optional().describe('The shared folder; default `<policies.folder>/.registry`.'),
            lease: duration.default(30_000).describe('A replica rewrites its file every lease/3; a file not rewritten for a lease (its replica is gone) is ignored.'),
          })
          .prefault({})
          .describe('Registry shared between replicas through the file system.'),
      })
      .prefault({})
      .describe('The service registry: endpoints registered by subscribed sidecars, plus static entries.'),
    push: z
      .strictObject({
        debounce: duration.default(50).describe('Changes within this window are pushed together (one snapshot per subscriber).'),
        helloTimeout: duration.default(10_000).describe('A subscriber must send its Hello within this time.'),
        maxSubscribers: z.number().int().min(1).default(20_000).describe('Open streams beyond this are refused with RESOURCE_EXHAUSTED.'),
      })
      .prefault({})
      .describe('The subscription stream.'),
    log: roleLogSchema,
    telemetry: roleTelemetrySchema,
  })
  .superRefine((config, ctx) => {
    if (config.store === 'redis' && !config.redis) ctx.addIssue({ code: 'custom', path: ['redis'], message: 'store: redis needs a redis: section (at least url)' });
    const seen = new Set<string>();
    config.registry.static.forEach((svc, i) => {
      const key = `${svc.name}.${svc.namespace}`;
      if (seen.has(key)) ctx.addIssue({ code: 'custom', path: ['registry', 'static', i, 'name'], message: `${key} is listed twice` });
      seen.add(key);
    });
  });

export type PolicyServerConfigInput = z.input<typeof policyServerConfigSchema>;
export type PolicyServerConfig = z.output<typeof policyServerConfigSchema>;
export type StaticServiceConfig = PolicyServerConfig['registry']['static'][number];
