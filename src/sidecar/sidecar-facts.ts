import { hostname } from 'node:os';
import type { CertificateManager } from '../identity/cert-manager.ts';

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
