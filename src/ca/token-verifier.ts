import { createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { JSONWebKeySet, JWTVerifyGetKey } from 'jose';
import { createLocalJWKSet, createRemoteJWKSet, customFetch } from 'jose';
import { Agent, fetch as undiciFetch } from 'undici';
import type { CaTokensConfig } from '../config/ca-schema.ts';
import { ConfigError } from '../config/load.ts';
import type { Clock } from '../core/clock.ts';
import { createConfiguredJwtCheck, JWT_PROBLEM_CODES } from '../identity/jwt-checks.ts';
import type { CaRefusal } from './ca-reasons.ts';
import { refuse } from './ca-reasons.ts';
import type { WorkloadIdentity } from './workload-claims.ts';
import { identityFromClaims } from './workload-claims.ts';

interface VerifiedToken extends WorkloadIdentity {
  readonly ok: true;
  readonly issuer: string;
}

export interface TokenVerifier {
  /** Never throws: a bad token is a refusal value. */
  verify(token: string): Promise<VerifiedToken | CaRefusal>;
}

export interface TokenVerifierDeps {
  readonly clock: Clock;
  readonly trustDomain: string;
  /** Resolves relative key file paths. */
  resolvePath(file: string): string;
  /** Config file name, for start-up errors. */
  readonly configFile: string;
}

/**
 * Verifies bootstrap tokens with jose: signature, `alg` in the allow-list,
 * `iss`, `aud`, `exp` (required), `nbf`, with the configured clock skew
 * against the injected clock. All three key sources go through one key
 * lookup (a JWKS): a PEM public key becomes a one-key set, so a token whose
 * `alg` does not fit the key type finds no key instead of reaching a
 * verifier that might misuse it. The token's `jku`, `x5u`, `jwk` and `x5c`
 * headers are ignored: keys come from configuration only.
 */
export async function createTokenVerifier(config: CaTokensConfig, deps: TokenVerifierDeps): Promise<TokenVerifier> {
  const check = createConfiguredJwtCheck(
    { algorithms: config.algorithms, issuers: config.issuers, audiences: config.audiences, clockSkewMs: config.clockSkew },
    await keySource(config, deps),
    deps.clock,
  );
  return {
    async verify(token) {
      const checked = await check(token);
      if ('problem' in checked) return refuse(JWT_PROBLEM_CODES[checked.problem].ca, checked.reason);
      const identity = identityFromClaims(checked.payload, deps.trustDomain);
      if (typeof identity === 'string') return refuse('ca.token_claims', `token: ${identity}`);
      return { ok: true, issuer: checked.payload.iss!, ...identity };
    },
  };
}

async function keySource(config: CaTokensConfig, deps: TokenVerifierDeps): Promise<JWTVerifyGetKey> {
  if (config.jwksUri) {
    const options = { timeoutDuration: 5_000, cooldownDuration: 30_000, cacheMaxAge: 600_000 };
    if (!config.jwksCaFile && !config.jwksTokenFile) return createRemoteJWKSet(new URL(config.jwksUri), options);
    return createRemoteJWKSet(new URL(config.jwksUri), { ...options, [customFetch]: await kubernetesFetch(config, deps) });
  }
  if (config.publicKeyFile) {
    const text = await readConfigFile(config.publicKeyFile, 'tokens.publicKeyFile', deps);
    let jwk: Record<string, unknown>;
    try {
      const key = createPublicKey(text);
      jwk = key.export({ format: 'jwk' }) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(`${deps.configFile}: tokens.publicKeyFile: not a PEM public key (${(err as Error).message.split('\n')[0]})`);
    }
    return createLocalJWKSet({ keys: [jwk] } as JSONWebKeySet);
  }
  const text = await readConfigFile(config.jwksFile!, 'tokens.jwksFile', deps);
  let jwks: JSONWebKeySet;
  try {
    jwks = JSON.parse(text) as JSONWebKeySet;
    return createLocalJWKSet(jwks);
  } catch (err) {
    throw new ConfigError(`${deps.configFile}: tokens.jwksFile: not a JWKS (${(err as Error).message.split('\n')[0]})`);
  }
}

/**
 * The fetch of a JWKS served like the Kubernetes API server's: TLS checked
 * against its own CA, a bearer token read at each fetch (projected tokens
 * rotate). Both files are read once at start, so a wrong path fails the start.
 */
async function kubernetesFetch(config: CaTokensConfig, deps: TokenVerifierDeps): Promise<NonNullable<Parameters<typeof createRemoteJWKSet>[1]>[typeof customFetch]> {
  const ca = config.jwksCaFile ? await readConfigFile(config.jwksCaFile, 'tokens.jwksCaFile', deps) : undefined;
  const tokenFile = config.jwksTokenFile;
  if (tokenFile) await readConfigFile(tokenFile, 'tokens.jwksTokenFile', deps);
  // Short keep-alive: keys are fetched every few minutes at most, and an idle socket must not hold the process open.
  const dispatcher = new Agent({ keepAliveTimeout: 1_000, ...(ca ? { connect: { ca } } : {}) });
  return async (url, init) => {
    const headers: Record<string, string> = Object.fromEntries(init.headers.entries());
    if (tokenFile) {
      const token = await readFile(deps.resolvePath(tokenFile), 'utf8').catch(() => undefined);
      // Worded so the refusal is ca.token_keys_unavailable: the keys could not be fetched.
      if (token === undefined) throw new Error('JWKS fetch: tokens.jwksTokenFile unreadable');
      headers.authorization = `Bearer ${token.trim()}`;
    }
    return (await undiciFetch(url, { method: init.method, redirect: init.redirect, signal: init.signal, headers, dispatcher })) as unknown as Response;
  };
}

async function readConfigFile(file: string, field: string, deps: TokenVerifierDeps): Promise<string> {
  try {
    return await readFile(deps.resolvePath(file), 'utf8');
  } catch (err) {
    throw new ConfigError(`${deps.configFile}: ${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}
