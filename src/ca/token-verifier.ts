import { createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createLocalJWKSet, createRemoteJWKSet, customFetch, decodeProtectedHeader, jwtVerify } from 'jose';
import { Agent, fetch as undiciFetch } from 'undici';
import type { JSONWebKeySet, JWTVerifyGetKey } from 'jose';
import type { CaTokensConfig } from '../config/ca-schema.ts';
import { ConfigError } from '../config/load.ts';
import type { Clock } from '../core/clock.ts';
import { refuse } from './ca-reasons.ts';
import type { CaRefusal } from './ca-reasons.ts';
import { identityFromClaims } from './workload-claims.ts';
import type { WorkloadIdentity } from './workload-claims.ts';

export interface VerifiedToken extends WorkloadIdentity {
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

/** Far larger than any real service-account token; bounds the work an unauthenticated caller can cause. */
const MAX_TOKEN_BYTES = 16_384;

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
  const getKey = await keySource(config, deps);
  const algorithms = [...config.algorithms];
  const clockTolerance = Math.ceil(config.clockSkew / 1000);
  return {
    async verify(token) {
      if (token.length > MAX_TOKEN_BYTES) return refuse('ca.token_malformed', `token longer than ${MAX_TOKEN_BYTES} bytes`);
      let alg: unknown;
      try {
        alg = decodeProtectedHeader(token).alg;
      } catch {
        return refuse('ca.token_malformed', 'token is not a JWT (compact JWS)');
      }
      // Checked here as well as by jose so the refusal names the algorithm (it is not secret).
      if (typeof alg !== 'string' || !algorithms.includes(alg as (typeof algorithms)[number])) {
        return refuse('ca.token_algorithm', `token algorithm ${JSON.stringify(alg)?.slice(0, 20)} not allowed (allowed: ${algorithms.join(', ')})`);
      }
      try {
        const { payload } = await jwtVerify(token, getKey, {
          algorithms,
          issuer: [...config.issuers],
          audience: [...config.audiences],
          requiredClaims: ['exp', 'iss', 'aud'],
          clockTolerance,
          currentDate: new Date(deps.clock.now()),
        });
        const identity = identityFromClaims(payload, deps.trustDomain);
        if (typeof identity === 'string') return refuse('ca.token_claims', `token: ${identity}`);
        return { ok: true, issuer: payload.iss!, ...identity };
      } catch (err) {
        return refusalOf(err);
      }
    },
  };
}

function refusalOf(err: unknown): CaRefusal {
  const e = err as { code?: string; claim?: string; reason?: string; message?: string };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return refuse('ca.token_expired', 'token expired');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.reason === 'missing') return refuse('ca.token_claims', `token lacks the "${e.claim}" claim`);
      if (e.claim === 'iss') return refuse('ca.token_issuer', 'token issuer not accepted');
      if (e.claim === 'aud') return refuse('ca.token_audience', 'token audience not accepted');
      if (e.claim === 'nbf' || e.claim === 'iat') return refuse('ca.token_not_yet_valid', `token not valid yet ("${e.claim}" is in the future)`);
      return refuse('ca.token_claims', `token claim "${e.claim}" is invalid`);
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return refuse('ca.token_algorithm', 'token algorithm not allowed');
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return refuse('ca.token_signature', 'token signature does not verify with a configured key');
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
      return refuse('ca.token_keys_unavailable', 'token signing keys unavailable (JWKS)');
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return refuse('ca.token_malformed', 'token is not a valid JWT');
    default:
      // jose raises a plain TypeError for a key that does not fit the algorithm, and fetch errors from a remote JWKS.
      // A JWKS server that answers other than 200 (a 401 for a bad bearer token) or not JSON is unavailable too.
      if (e.message && /fetch|ECONN|ENOTFOUND|network|Expected 200 OK|JSON Web Key Set HTTP response|certificate/i.test(e.message)) {
        return refuse('ca.token_keys_unavailable', 'token signing keys unavailable (JWKS)');
      }
      return refuse('ca.token_signature', 'token signature does not verify with a configured key');
  }
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
