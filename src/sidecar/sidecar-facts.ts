import { hostname } from 'node:os';
import type { SidecarConfig } from '../config/sidecar-schema.ts';
import { describeTracingSettings } from '../config/telemetry-schema.ts';
import { redactRedisUrl } from '../core/redis-url.ts';
import type { CertificateManager } from '../identity/cert-manager.ts';
import type { Tracing } from '../telemetry/tracing.ts';

/** The config as /config_dump shows it: secrets that may sit in it left out. */
export function describeConfig(config: SidecarConfig, tracing: Tracing): unknown {
  return {
    ...config,
    telemetry: { ...config.telemetry, tracing: describeTracingSettings(tracing.settings) }, // export headers may hold a key
    rateLimit: { ...config.rateLimit, redis: config.rateLimit.redis && { ...config.rateLimit.redis, url: redactRedisUrl(config.rateLimit.redis.url) } }, // a URL may hold a password
  };
}

/** host:port peers use to reach this workload: the bound address, or the hostname behind a wildcard bind. */
export function advertisedAddress(bindAddress: string, port: number): string {
  const host = bindAddress === '0.0.0.0' || bindAddress === '::' ? hostname() : bindAddress;
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** What /config_dump shows of the certificate: identity and dates, never the key. */
export function describeCertificate(identity: { readonly spiffeId: string; readonly manager: CertificateManager } | undefined): unknown {
  const creds = identity?.manager.current();
  if (!identity || !creds) return identity ? { spiffeId: identity.spiffeId, state: 'waiting' } : null;
  return {
    spiffeId: creds.facts.spiffeId,
    serial: creds.facts.serial,
    notBefore: creds.facts.notBefore.toISOString(),
    notAfter: creds.facts.notAfter.toISOString(),
    valid: identity.manager.valid(),
    trustBundleRoots: creds.trustBundlePem.length,
    renewals: identity.manager.stats().issued,
  };
}
