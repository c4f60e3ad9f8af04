import { X509Certificate } from 'node:crypto';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createAdminServer } from '../admin/admin-server.ts';
import type { CaConfig } from '../config/ca-schema.ts';
import { ConfigError } from '../config/load.ts';
import { runBackgroundLoop } from '../core/background-loop.ts';
import type { Random } from '../core/clock.ts';
import { bindGrpc, stopGrpc } from '../core/listen.ts';
import { formatSpiffeId } from '../core/spiffe-id.ts';
import { loadCaApi } from '../identity/ca-api.ts';
import type { ServingMaterial } from '../identity/grpc-server-credentials.ts';
import { createGrpcServerCredentials } from '../identity/grpc-server-credentials.ts';
import { generateKeyPair, privateKeyToPem, x509 } from '../identity/x509.ts';
import type { RoleDeps } from '../telemetry/role-deps.ts';
import { registerTracingMetrics } from '../telemetry/tracing-metrics.ts';
import { createAuditLog } from './audit-log.ts';
import type { CaMaterial } from './ca-material.ts';
import { loadCaMaterial } from './ca-material.ts';
import type { CaMetrics } from './ca-metrics.ts';
import { createCaMetrics } from './ca-metrics.ts';
import { createCaService } from './ca-service.ts';
import type { IssuedLeaf, LeafSigner } from './leaf-signer.ts';
import { createLeafSigner } from './leaf-signer.ts';
import { createRateLimiter } from './rate-limiter.ts';
import { createTokenVerifier } from './token-verifier.ts';

export interface CaDeps extends RoleDeps {
  /** Jitter of retry backoffs; Math.random unless a test pins it. */
  readonly random?: Random;
  /** Serial numbers; a CSPRNG unless a test pins it. */
  readonly randomBytes?: (size: number) => Buffer;
}

export interface RunningCa {
  readonly grpcPort: number;
  readonly adminPort: number;
  readonly metrics: CaMetrics;
  /** The roots served, PEM: what a client needs to verify the CA's serving certificate. */
  readonly trustBundlePem: readonly string[];
  /** Stops accepting; in-flight calls get a few seconds. */
  close(): Promise<void>;
}

/** The CA's own identity in its serving certificate. */
export const CA_NAMESPACE = 'meshgate-system';
export const CA_SERVICE_ACCOUNT = 'meshgate-ca';

/** After a failed renewal of the CA's own serving certificate: 2 s, doubling to at most 5 min (full jitter, plus 1 s). */
const SERVING_RENEWAL_BACKOFF = { baseMs: 1_000, maxMs: 300_000 };

/**
 * The CA role: loads and cross-checks the signing material, issues its own
 * serving certificate from it (renewed at half-life), and serves the CA API
 * over TLS with optional client certificates (for renewal) plus an admin
 * listener. Start-up problems throw ConfigError; after start, nothing the
 * network sends can make it throw.
 */
export async function startCa(config: CaConfig, deps: CaDeps): Promise<RunningCa> {
  const { logger, clock } = deps;
  const configFile = deps.configFile ?? 'config';
  const resolvePath = (file: string): string => path.resolve(deps.configDir ?? process.cwd(), file);

  const material = await loadCaMaterial(config, { clock, resolvePath, configFile });
  const verifier = await createTokenVerifier(config.tokens, { clock, trustDomain: config.trustDomain, resolvePath, configFile });
  const signer = await createLeafSigner(material, { clock, ...(deps.randomBytes ? { randomBytes: deps.randomBytes } : {}) });
  const metrics = createCaMetrics({ defaultMetrics: deps.defaultMetrics ?? false });
  const { tracing } = deps;
  registerTracingMetrics(metrics.registry, tracing);
  metrics.signingCertExpiry.set(material.chainNotAfter.getTime() / 1000);
  let audit;
  try {
    audit = await createAuditLog({ ...(config.audit.file ? { file: resolvePath(config.audit.file) } : {}), logger, clock });
  } catch (err) {
    throw new ConfigError(`${configFile}: audit.file: cannot open ${config.audit.file} for appending (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const limiter = createRateLimiter({ requests: config.rateLimit.perIdentity.requests, windowMs: config.rateLimit.perIdentity.window, clock });

  const clientCaPem = [...material.rootsPem, ...material.chainPem].join('');
  let serving = await issueServingCertificate(config, signer, material);
  const tls = createGrpcServerCredentials({ ...serving.material, clientCaPem }, { clientCertificates: 'optional' });
  const lifetime = new AbortController();
  scheduleServingRenewal();

  const api = loadCaApi();
  const server = new grpc.Server({
    // A CSR is a few KiB; nothing legitimate comes near this.
    'grpc.max_receive_message_length': 64 * 1024,
    'grpc.max_concurrent_streams': 100,
  });
  server.addService(api.service, createCaService({ config, material, verifier, signer, limiter, audit, metrics, logger, clock, tracing }));
  let grpcPort: number;
  try {
    grpcPort = await bindGrpc(server, config.listen.address, config.listen.port, tls.credentials);
  } catch (err) {
    await audit.close();
    lifetime.abort();
    throw err;
  }

  const admin = createAdminServer({
    registry: metrics.registry,
    readiness: async () => {
      const now = clock.now();
      const signingOk = material.chainNotAfter.getTime() > now;
      const servingOk = serving.leaf.notAfter.getTime() > now;
      return {
        ready: signingOk && servingOk,
        checks: {
          signing: signingOk ? 'ok' : `issuing CA expired at ${material.chainNotAfter.toISOString()}`,
          serving: servingOk ? 'ok' : `serving certificate expired at ${serving.leaf.notAfter.toISOString()}`,
        },
      };
    },
    configDump: () => ({
      trustDomain: config.trustDomain,
      listen: { ...config.listen, port: grpcPort },
      signing: describeCert(material.signingCert.toString('pem')),
      chain: material.chainPem.map(describeCert),
      trustBundle: material.rootsPem.map(describeCert),
      serving: { serial: serving.leaf.serial, notAfter: serving.leaf.notAfter.toISOString(), dnsNames: config.serving.dnsNames, ipAddresses: config.serving.ipAddresses },
      tokens: {
        issuers: config.tokens.issuers,
        audiences: config.tokens.audiences,
        algorithms: config.tokens.algorithms,
        keys: config.tokens.jwksUri ?? config.tokens.jwksFile ?? config.tokens.publicKeyFile,
        clockSkewMs: config.tokens.clockSkew,
      },
      leaf: config.leaf,
      rateLimit: config.rateLimit,
      audit: { file: config.audit.file ?? null },
    }),
  });
  let adminAddress;
  try {
    adminAddress = await admin.listen(config.admin.port, config.admin.address);
  } catch (err) {
    server.forceShutdown();
    await audit.close();
    lifetime.abort();
    throw err;
  }
  logger.info({ grpcPort, adminPort: adminAddress.port, trustDomain: config.trustDomain, roots: material.rootsPem.length, servingSerial: serving.leaf.serial }, 'meshgate ca listening');

  return {
    grpcPort,
    adminPort: adminAddress.port,
    metrics,
    trustBundlePem: material.rootsPem,
    async close() {
      lifetime.abort();
      await stopGrpc(server, 5_000);
      await admin.close();
      await audit.close();
    },
  };

  // The serving certificate lives leaf.maxTtl; a CA that runs for weeks renews it in place, at half-life, and keeps
  // retrying a failed renewal until the certificate it serves has expired (readiness then says so).
  function scheduleServingRenewal(): void {
    const halfLifeLeft = (): number => (serving.leaf.notAfter.getTime() - clock.now()) / 2;
    void runBackgroundLoop(
      async () => {
        const next = await issueServingCertificate(config, signer, material);
        if (lifetime.signal.aborted) return 0;
        serving = next;
        tls.update({ ...next.material, clientCaPem });
        logger.info({ serial: next.leaf.serial, notAfter: next.leaf.notAfter.toISOString() }, 'serving certificate renewed');
        return Math.max(1_000, halfLifeLeft());
      },
      {
        signal: lifetime.signal,
        firstDelayMs: Math.max(1_000, halfLifeLeft()),
        backoff: SERVING_RENEWAL_BACKOFF,
        random: deps.random ?? Math.random,
        // Each retry comes before the current certificate runs out, however long the backoff has grown.
        maxRetryDelayMs: () => Math.max(1_000, halfLifeLeft()),
        onError: (err, failuresInRow, retryInMs) => logger.error({ err, failuresInRow, retryInMs }, 'serving certificate renewal failed; retrying'),
      },
    );
  }
}

async function issueServingCertificate(config: CaConfig, signer: LeafSigner, material: CaMaterial): Promise<{ leaf: IssuedLeaf; material: Omit<ServingMaterial, 'clientCaPem'> }> {
  const keys = await generateKeyPair('ecdsa-p256');
  const leaf = await signer.sign({
    publicKey: await x509.PublicKey.create(keys.publicKey),
    keyType: 'ecdsa-p256',
    spiffeId: formatSpiffeId({ trustDomain: config.trustDomain, namespace: CA_NAMESPACE, serviceAccount: CA_SERVICE_ACCOUNT }),
    ttlMs: config.leaf.maxTtl,
    dnsNames: config.serving.dnsNames,
    ipAddresses: config.serving.ipAddresses,
  });
  return { leaf, material: { keyPem: await privateKeyToPem(keys.privateKey), certChainPem: [leaf.pem, ...material.chainPem].join('') } };
}

function describeCert(pem: string): { subject: string; serial: string; notAfter: string; fingerprint256: string } {
  const cert = new X509Certificate(pem);
  return { subject: cert.subject.replaceAll('\n', ', '), serial: cert.serialNumber, notAfter: new Date(cert.validTo).toISOString(), fingerprint256: cert.fingerprint256 };
}
