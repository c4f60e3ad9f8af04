import { createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket, TlsOptions } from 'node:tls';
import type { JSONWebKeySet, JWTVerifyGetKey } from 'jose';
import { createLocalJWKSet, createRemoteJWKSet } from 'jose';
import type { AdminApiConfig, AdminJwtConfig } from '../config/admin-api-schema.ts';
import { ConfigError } from '../config/load.ts';
import type { Clock } from '../core/clock.ts';
import { spiffeIdOfCertificate } from '../core/spiffe-id.ts';
import { createConfiguredJwtCheck } from '../identity/jwt-checks.ts';

/** Who the caller proved to be; its role comes later, from RBAC. */
export interface AdminCaller {
  readonly ok: true;
  readonly subject: string;
  readonly via: 'mtls' | 'jwt';
}

/** Why a caller is not authenticated. The reason is shown to the caller: it never quotes a token. */
export interface AdminAuthFailure {
  readonly ok: false;
  readonly reason: string;
}

export interface AdminAuthenticator {
  /** Never throws: a bad credential is a failure value. */
  authenticate(req: IncomingMessage): Promise<AdminCaller | AdminAuthFailure>;
}

export interface AdminAuthDeps {
  readonly clock: Clock;
  /** Resolves relative key file paths (against the config file's directory). */
  resolvePath(file: string): string;
  /** Config file name, for start-up errors. */
  readonly configFile: string;
}

/**
 * TLS options for the admin listener: client certificates are requested and
 * verified against the trust bundle, but optional at the TLS layer, so a
 * caller with a bearer token and no certificate still completes the
 * handshake. A certificate that fails verification does not end the
 * handshake either; `socket.authorized` is false and the caller is not
 * identified by it (see peerSpiffeId).
 */
export function adminTlsServerOptions(material: { key: string | Buffer; cert: string | Buffer; ca: string | Buffer | Array<string | Buffer> }): TlsOptions {
  return { key: material.key, cert: material.cert, ca: material.ca, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' };
}

function isTlsSocket(socket: Socket): socket is TLSSocket {
  return typeof (socket as Partial<TLSSocket>).getPeerCertificate === 'function';
}

/**
 * The SPIFFE ID of the request's client certificate, from `req.socket`.
 * Only a certificate that OpenSSL verified against the listener's `ca` counts
 * (`socket.authorized`); it must be a leaf with exactly one `spiffe://` URI
 * SAN, of an accepted trust domain when `trustDomains` is not empty.
 *
 * undefined: plain HTTP, or no certificate presented. A failure: a
 * certificate was presented and is not acceptable (the reason says why).
 */
export function peerSpiffeId(socket: Socket, trustDomains: readonly string[] = []): { ok: true; spiffeId: string } | AdminAuthFailure | undefined {
  if (!isTlsSocket(socket)) return undefined;
  const cert = socket.getPeerCertificate();
  // Node returns an empty object when the peer sent no certificate.
  if (!cert || Object.keys(cert).length === 0) return undefined;
  if (!socket.authorized) {
    return { ok: false, reason: `client certificate not verified (${String(socket.authorizationError ?? 'unknown error')})` };
  }
  if (cert.ca) return { ok: false, reason: 'client certificate is a CA certificate' };
  const spiffeId = spiffeIdOfCertificate(cert.subjectaltname);
  if (spiffeId === undefined) return { ok: false, reason: 'client certificate has not exactly one spiffe:// URI SAN' };
  const trustDomain = /^spiffe:\/\/([^/]+)/.exec(spiffeId)?.[1];
  if (trustDomains.length > 0 && (trustDomain === undefined || !trustDomains.includes(trustDomain))) {
    return { ok: false, reason: `client certificate trust domain ${trustDomain ?? '(none)'} not accepted` };
  }
  return { ok: true, spiffeId };
}

/**
 * Authenticates admin callers. A request with an `Authorization` header is
 * judged by its bearer token alone (a bad token is a 401 even when a client
 * certificate is also presented: the caller chose the token); otherwise by
 * its verified client certificate; otherwise it is unauthenticated.
 *
 * Tokens are verified with jose: signature by a configured key (the token's
 * `jku`, `x5u`, `jwk` and `x5c` headers are ignored), `alg` in the allow-list
 * (asymmetric only), `iss`, `aud`, `exp` required, `nbf`, with the configured
 * skew against the injected clock.
 */
export async function createAdminAuthenticator(config: Pick<AdminApiConfig, 'mtls' | 'jwt'>, deps: AdminAuthDeps): Promise<AdminAuthenticator> {
  const jwt = config.jwt ? await createJwtCheck(config.jwt, deps) : undefined;
  return {
    async authenticate(req) {
      const header = req.headers.authorization;
      if (header !== undefined) {
        const match = /^Bearer[ ]+([^ ]+)[ ]*$/i.exec(header);
        if (!match) return { ok: false, reason: 'Authorization header is not "Bearer <token>"' };
        if (!jwt) return { ok: false, reason: 'bearer tokens are not accepted (adminApi.jwt is not configured)' };
        return jwt(match[1]!);
      }
      if (config.mtls.enabled) {
        const peer = peerSpiffeId(req.socket, config.mtls.trustDomains);
        if (peer?.ok) return { ok: true, subject: peer.spiffeId, via: 'mtls' };
        if (peer) return peer;
      }
      return { ok: false, reason: config.mtls.enabled ? 'no credentials: present a client certificate or a bearer token' : 'no credentials: present a bearer token' };
    },
  };
}

async function createJwtCheck(config: AdminJwtConfig, deps: AdminAuthDeps): Promise<(token: string) => Promise<AdminCaller | AdminAuthFailure>> {
  const check = createConfiguredJwtCheck(
    { algorithms: config.algorithms, issuers: config.issuers, audiences: config.audiences, clockSkewMs: config.clockSkew },
    await keySource(config, deps),
    deps.clock,
  );
  return async (token) => {
    const checked = await check(token);
    if ('problem' in checked) return { ok: false, reason: checked.reason };
    const subject = checked.payload[config.subjectClaim];
    if (typeof subject !== 'string' || subject === '') return { ok: false, reason: `token has no string "${config.subjectClaim}" claim` };
    return { ok: true, subject, via: 'jwt' };
  };
}

async function keySource(config: AdminJwtConfig, deps: AdminAuthDeps): Promise<JWTVerifyGetKey> {
  if (config.jwksUri) {
    return createRemoteJWKSet(new URL(config.jwksUri), { timeoutDuration: 5_000, cooldownDuration: 30_000, cacheMaxAge: 600_000 });
  }
  // A PEM key becomes a one-key set, so a token whose `alg` does not fit the key type finds no key.
  if (config.publicKeyFile) {
    const text = await readConfigFile(config.publicKeyFile, 'adminApi.jwt.publicKeyFile', deps);
    try {
      const jwk = createPublicKey(text).export({ format: 'jwk' });
      return createLocalJWKSet({ keys: [jwk] } as JSONWebKeySet);
    } catch (err) {
      throw new ConfigError(`${deps.configFile}: adminApi.jwt.publicKeyFile: not a PEM public key (${(err as Error).message.split('\n')[0]})`);
    }
  }
  const text = await readConfigFile(config.jwksFile!, 'adminApi.jwt.jwksFile', deps);
  try {
    return createLocalJWKSet(JSON.parse(text) as JSONWebKeySet);
  } catch (err) {
    throw new ConfigError(`${deps.configFile}: adminApi.jwt.jwksFile: not a JWKS (${(err as Error).message.split('\n')[0]})`);
  }
}

async function readConfigFile(file: string, field: string, deps: AdminAuthDeps): Promise<string> {
  try {
    return await readFile(deps.resolvePath(file), 'utf8');
  } catch (err) {
    throw new ConfigError(`${deps.configFile}: ${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}
