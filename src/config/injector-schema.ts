import { isIP } from 'node:net';
import { z } from 'zod';
import { roleLogSchema, tracingConfigSchema } from './telemetry-schema.ts';

/*
 * The injector's configuration: `meshgate injector --config FILE` (the
 * admission webhook) and `meshgate inject -f ... [--config FILE]` read the
 * same file, so both add the same sidecar. Mesh-wide settings live here; each
 * pod can adjust its own with `meshgate.dev/*` annotations (README, "Run it
 * in Kubernetes"). Relative paths resolve against the file's folder.
 */

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, e.g. meshgate-ca.meshgate-system.svc:15012');
const port = z.number().int().min(1).max(65535);
/** A Kubernetes resource quantity as the API accepts it for cpu and memory (100m, 0.5, 128Mi, 1G). */
export const QUANTITY = /^\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/;
const quantity = z.string().regex(QUANTITY, 'expected a quantity like 100m, 1, 128Mi or 1Gi');
const resourcePair = z.strictObject({
  cpu: quantity.optional().describe('CPU, e.g. 100m.'),
  memory: quantity.optional().describe('Memory, e.g. 128Mi.'),
});

/** An IPv4 or IPv6 CIDR (address/prefix); a bare address is not one. */
export function isCidr(text: string): boolean {
  const slash = text.indexOf('/');
  if (slash < 0) return false;
  const family = isIP(text.slice(0, slash));
  const prefix = text.slice(slash + 1);
  if (family === 0 || !/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

export const injectorConfigSchema = z.strictObject({
  listen: z
    .strictObject({
      address: z.string().min(1).default('0.0.0.0').describe('Address to bind.'),
      port: z.number().int().min(0).max(65535).default(15017).describe('Port to bind; 0 picks a free port.'),
    })
    .prefault({})
    .describe('HTTPS listener of the webhook: POST /inject (AdmissionReview v1), GET /live, /ready, /metrics.'),
  tls: z
    .strictObject({
      certFile: z.string().min(1).describe('PEM serving certificate (and chain) for the webhook Service name, e.g. injector.pem from `meshgate certs webhook`.'),
      keyFile: z.string().min(1).describe('PEM private key of certFile.'),
    })
    .optional()
    .describe('Serving certificate of the webhook; the API server checks it against the caBundle of the MutatingWebhookConfiguration. Required by `meshgate injector`, unused by `meshgate inject`.'),
  sidecar: z
    .strictObject({
      image: z.string().min(1).default('meshgate:0.1.0').describe('Image of the sidecar and of the iptables init container (one image holds both).'),
      imagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']).default('IfNotPresent').describe('Pull policy of both injected containers.'),
      resources: z
        .strictObject({
          requests: resourcePair.prefault({ cpu: '100m', memory: '128Mi' }).describe('Requests of the sidecar container.'),
          limits: resourcePair.prefault({ cpu: '1', memory: '512Mi' }).describe('Limits of the sidecar container.'),
        })
        .prefault({})
        .describe('Sidecar resources; a pod changes them with meshgate.dev/proxy-cpu, -memory, -cpu-limit, -memory-limit.'),
      logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('log.level of each sidecar.'),
      mtlsMode: z.enum(['STRICT', 'PERMISSIVE']).default('STRICT').describe('mtls.mode of each sidecar; PERMISSIVE while a namespace migrates.'),
    })
    .prefault({})
    .describe('The injected sidecar container.'),
  mesh: z
    .strictObject({
      trustDomain: z
        .string()
        .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'expected a trust domain like cluster.local')
        .default('cluster.local')
        .describe('SPIFFE trust domain.'),
      trustBundleFile: z.string().min(1).default('trust-bundle.pem').describe('PEM roots of the mesh (trust-bundle.pem from `meshgate certs init`), read at start and copied into each injected pod.'),
      ca: z
        .strictObject({
          address: hostPort.default('meshgate-ca.meshgate-system.svc:15012').describe('host:port of `meshgate ca` as pods reach it.'),
          serverName: z.string().min(1).default('meshgate-ca').describe('Name checked in the CA serving certificate.'),
        })
        .prefault({})
        .describe('Where sidecars get certificates.'),
      token: z
        .strictObject({
          audience: z.string().min(1).default('meshgate-ca').describe("Audience of the projected service-account token; must be in the CA's tokens.audiences."),
          expirationSeconds: z.number().int().min(600).max(86_400).default(600).describe('Lifetime of the projected token (the kubelet refreshes it); Kubernetes accepts 600 and more.'),
        })
        .prefault({})
        .describe('Bootstrap token: a projected service-account token mounted into the sidecar.'),
      policyServers: z.array(hostPort).default(['meshgate-policy-server.meshgate-system.svc:15010']).describe('policy.servers of each sidecar; empty: sidecars run without a policy server.'),
      redisUrl: z
        .string()
        .regex(/^rediss?:\/\/[^\s]+$/, 'expected redis://host:port[/db]')
        .optional()
        .describe('rateLimit.redis.url of each sidecar (global rate limits).'),
      tracing: tracingConfigSchema.optional().describe('telemetry.tracing of each sidecar, e.g. { exporter: otlp-grpc, endpoint: http://jaeger-collector.meshgate-system.svc:4317 }.'),
    })
    .prefault({})
    .describe("Mesh-wide settings written into each sidecar's config."),
  interception: z
    .strictObject({
      excludeInboundPorts: z.array(port).default([]).describe('Inbound ports never redirected to the sidecar, in every pod.'),
      excludeOutboundPorts: z.array(port).default([]).describe('Outbound ports never redirected, e.g. a database the apps reach directly.'),
      excludeOutboundCidrs: z.array(z.string().refine(isCidr, 'expected a CIDR like 10.0.0.0/8')).default([]).describe("Outbound destinations never redirected, e.g. the API server's address."),
    })
    .prefault({})
    .describe('Defaults of the `meshgate iptables` init container; pods add to them with annotations.'),
  log: roleLogSchema,
});

export type InjectorConfigInput = z.input<typeof injectorConfigSchema>;
export type InjectorConfig = z.output<typeof injectorConfigSchema>;
