import { readFileSync } from 'node:fs';
import type { RedisOptions } from 'ioredis';
import { Redis } from 'ioredis';

/*
 * The one way meshgate builds an ioredis client, for the sidecars' global
 * rate limits and for the policy servers' shared store: the URL (rediss://
 * turns TLS on), an ACL user, a password read from a file (never from the
 * URL in a config file, never logged), and optionally Sentinel, which finds
 * the primary and follows its failovers. Each caller adds its own timeouts
 * and retry behaviour.
 */

export interface RedisConnectionOptions {
  readonly url: string;
  readonly username?: string | undefined;
  readonly passwordFile?: string | undefined;
  /** PEM bundle that signs the server's certificate, for rediss:// with a private CA (the system roots otherwise). */
  readonly caFile?: string | undefined;
  readonly sentinel?: { readonly name: string; readonly addresses: readonly string[]; readonly passwordFile?: string | undefined } | undefined;
}

function readSecret(file: string): string {
  return readFileSync(file, 'utf8').trim();
}

/** Splits host:port (IPv6 in brackets). */
function hostPort(address: string): { host: string; port: number } {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!match) throw new Error(`expected host:port, got ${address}`);
  return { host: match[1]!, port: Number(match[2]) };
}

export function createRedisClient(conn: RedisConnectionOptions, tuning: RedisOptions): Redis {
  const password = conn.passwordFile ? readSecret(conn.passwordFile) : undefined;
  const credentials: RedisOptions = {
    ...(conn.username ? { username: conn.username } : {}),
    ...(password ? { password } : {}),
  };
  const tlsOptions = conn.caFile ? { ca: readFileSync(conn.caFile, 'utf8') } : {};
  if (!conn.sentinel) return new Redis(conn.url, { ...credentials, ...(conn.caFile && conn.url.startsWith('rediss:') ? { tls: tlsOptions } : {}), ...tuning });
  // Through Sentinel the URL gives the scheme (TLS to the primary and to the Sentinels), the database and credentials.
  const url = new URL(conn.url);
  const tls = url.protocol === 'rediss:';
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  const sentinelPassword = conn.sentinel.passwordFile ? readSecret(conn.sentinel.passwordFile) : undefined;
  return new Redis({
    ...credentials,
    ...(url.username && !conn.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password && !password ? { password: decodeURIComponent(url.password) } : {}),
    sentinels: conn.sentinel.addresses.map(hostPort),
    name: conn.sentinel.name,
    db,
    ...(sentinelPassword ? { sentinelPassword } : {}),
    ...(tls ? { tls: tlsOptions, enableTLSForSentinelMode: true, sentinelTLS: tlsOptions } : {}),
    ...tuning,
  });
}
