import { readFile } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import type { IdentityConfig } from '../config/sidecar-schema.ts';
import { bearerMetadata, createCaClient } from './ca-api.ts';
import type { CertificateSigner, WorkloadCredentials } from './cert-manager.ts';

/**
 * Signs through `meshgate ca`. A renewal authenticates with the current
 * certificate while it is valid, so a host outside Kubernetes needs its
 * bootstrap token only once; otherwise the token file is read afresh (a
 * Kubernetes projected token rotates on disk).
 */
export function createCaSigner(config: IdentityConfig, now: () => number): CertificateSigner {
  return async ({ csrPem, ttlSeconds }, current, signal) => {
    const roots = await readFile(config.ca.trustBundleFile);
    const renewing = current !== undefined && now() < current.facts.notAfter.getTime();
    const token = renewing ? undefined : await readToken(config.tokenFile);
    if (!renewing && token === undefined) {
      throw new Error(config.tokenFile ? `cannot read bootstrap token ${config.tokenFile}` : 'no bootstrap token (identity.tokenFile) and no valid certificate');
    }
    const credentials = renewing
      ? grpc.credentials.createSsl(roots, Buffer.from(current.keyPem), Buffer.from(chainOf(current)))
      : grpc.credentials.createSsl(roots);
    const client = createCaClient(config.ca.address, credentials, {
      'grpc.ssl_target_name_override': config.ca.serverName,
      'grpc.default_authority': config.ca.serverName,
    });
    const onAbort = (): void => client.close();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const reply = await client.sign({ csrPem, ttlSeconds }, token ? bearerMetadata(token) : undefined, config.ca.timeout);
      return { chainPem: reply.certChainPem, trustBundlePem: reply.trustBundlePem };
    } finally {
      signal.removeEventListener('abort', onAbort);
      client.close();
    }
  };
}

function chainOf(creds: WorkloadCredentials): string {
  return creds.chainPem.join('');
}

async function readToken(file: string | undefined): Promise<string | undefined> {
  if (!file) return undefined;
  try {
    const token = (await readFile(file, 'utf8')).trim();
    return token.length > 0 ? token : undefined;
  } catch {
    return undefined;
  }
}
