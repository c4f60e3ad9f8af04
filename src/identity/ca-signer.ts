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
  const call = async (credentials: grpc.ChannelCredentials, request: { csrPem: string; ttlSeconds: number }, token: string | undefined, signal: AbortSignal) => {
    const client = createCaClient(config.ca.address, credentials, {
      'grpc.ssl_target_name_override': config.ca.serverName,
      'grpc.default_authority': config.ca.serverName,
    });
    const onAbort = (): void => client.close();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const reply = await client.sign(request, token ? bearerMetadata(token) : undefined, config.ca.timeout);
      return { chainPem: reply.certChainPem, trustBundlePem: reply.trustBundlePem };
    } finally {
      signal.removeEventListener('abort', onAbort);
      client.close();
    }
  };

  return async (request, current, signal) => {
    const roots = await readFile(config.ca.trustBundleFile);
    if (current !== undefined && now() < current.facts.notAfter.getTime()) {
      try {
        return await call(grpc.credentials.createSsl(roots, Buffer.from(current.keyPem), Buffer.from(chainOf(current))), request, undefined, signal);
      } catch (err) {
        // The CA may no longer accept this certificate (its clock, a rotated root): a token still proves who we are.
        const token = await readToken(config.tokenFile);
        if ((err as grpc.ServiceError).code !== grpc.status.UNAUTHENTICATED || token === undefined) throw err;
        return call(grpc.credentials.createSsl(roots), request, token, signal);
      }
    }
    const token = await readToken(config.tokenFile);
    if (token === undefined) {
      throw new Error(config.tokenFile ? `cannot read bootstrap token ${config.tokenFile}` : 'no bootstrap token (identity.tokenFile) and no valid certificate');
    }
    return call(grpc.credentials.createSsl(roots), request, token, signal);
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
