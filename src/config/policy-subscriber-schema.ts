import { z } from 'zod';
import { duration } from './durations.ts';

/*
 * The sidecar's `policy:` section: where the policy stream comes from and how
 * the sidecar behaves without it. A separate schema so the policy side can
 * be tested apart; src/config/sidecar-schema.ts mounts it as `policy:`.
 * Every field has a description: the README reference is generated from them.
 */

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, e.g. policy-server.meshgate-system:15010');

const serviceRef = z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'expected name.namespace, e.g. orders.shop');

export const policySubscriberConfigSchema = z
  .strictObject({
    servers: z
      .array(hostPort)
      .min(1)
      .describe('Policy server replicas (host:port of their gRPC listener), tried in order; on failure the sidecar moves to the next. List two or more for availability.'),
    serverName: z.string().min(1).default('policy-server').describe('TLS server name (SNI and :authority) sent to the policy server.'),
    expectedIdentity: z
      .string()
      .startsWith('spiffe://')
      .optional()
      .describe("SPIFFE ID the policy server's certificate must carry; default spiffe://<trust-domain>/ns/meshgate-system/sa/policy-server (trust domain of the sidecar's own certificate)."),
    stateDir: z
      .string()
      .min(1)
      .default('/var/lib/meshgate')
      .describe(
        'Folder where the last-known-good snapshot is persisted (one JSON file per workload, replaced atomically); the sidecar boots from it when no server answers. Must be writable: a copy the sidecar cannot rewrite at boot, or one set aside after a failed write, is not trusted (nothing is admitted until a server answers).',
      ),
    maxStaleness: duration.default(300_000).describe('/ready reports `degraded` (still 200) when the sidecar runs on a copy that has not been confirmed by a server for longer than this.'),
    onNoPolicy: z
      .enum(['deny', 'allow'])
      .default('deny')
      .describe('With no snapshot at all (none received, none on disk): deny admits nothing and /ready is 503; allow admits every call and must be set explicitly.'),
    destinations: z.array(serviceRef).optional().describe('Services (name.namespace) the workload calls, so the server sends only their registry entries; omitted: the whole registry.'),
    holdEndpoints: duration
      .default(45_000)
      .describe(
        'When a registry update leaves a service with no endpoint (its sidecars not yet reconnected to a restarted policy server, say), the endpoints it had keep serving for this long if one of them answered a call below 500 within this window, or until an update lists endpoints again. Mutual TLS still checks every connection. 0 disables.',
      ),
    connectTimeout: duration.default(10_000).describe('Time a server has to answer a subscription with its first snapshot before the sidecar tries the next one.'),
    reconnect: z
      .strictObject({
        base: duration.default(500).describe('First reconnect backoff ceiling (full jitter), once every server has failed.'),
        max: duration.default(30_000).describe('Largest reconnect backoff ceiling.'),
      })
      .prefault({})
      .describe('Backoff between rounds of reconnection attempts.'),
  })
  .superRefine((policy, ctx) => {
    policy.servers.forEach((server, i) => {
      if (policy.servers.indexOf(server) !== i) ctx.addIssue({ code: 'custom', path: ['servers', i], message: `${server} is listed twice` });
    });
    if (policy.reconnect.max < policy.reconnect.base) {
      ctx.addIssue({ code: 'custom', path: ['reconnect', 'max'], message: 'must be at least reconnect.base' });
    }
  });

export type PolicySubscriberConfigInput = z.input<typeof policySubscriberConfigSchema>;
export type PolicySubscriberConfig = z.output<typeof policySubscriberConfigSchema>;

/** The policy server's identity when `expectedIdentity` is not set. */
export function defaultPolicyServerIdentity(trustDomain: string): string {
  return `spiffe://${trustDomain}/ns/meshgate-system/sa/policy-server`;
}
