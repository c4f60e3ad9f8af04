import { createHash } from 'node:crypto';
import type { Dispatcher } from 'undici';
import type { Clock } from '../../core/clock.ts';
import type { Logger } from '../../telemetry/logger.ts';
import { fetchJson } from './http-json.ts';
import { createLruCache } from './lru-cache.ts';
import type { SecretFiles } from './secret-files.ts';

export interface IntrospectionSettings {
  readonly endpoint: string;
  readonly clientId: string;
  /** File name in the runtime's secrets folder. */
  readonly clientSecretFile: string;
  readonly cacheTtlMs: number;
  readonly cacheSize: number;
  readonly timeoutMs: number;
}

/** The endpoint's word on one token. */
type IntrospectionAnswer =
  | { readonly state: 'active'; readonly claims: Readonly<Record<string, unknown>> }
  | { readonly state: 'inactive' }
  | { readonly state: 'unavailable'; readonly problem: string };

export interface IntrospectionClient {
  /** Never throws; answers from the cache when it can. */
  introspect(token: string): Promise<IntrospectionAnswer>;
  stats(): { readonly endpoint: string; readonly cached: number; readonly requests: number; readonly hits: number; readonly failures: number };
}

export interface IntrospectionClientDeps {
  readonly clock: Clock;
  readonly secrets: SecretFiles;
  readonly dispatcher?: Dispatcher;
  readonly logger?: Logger;
}

const MAX_ANSWER_BYTES = 64 * 1024;

/**
 * OAuth2 token introspection (RFC 7662): a form POST of the token with the
 * client's credentials (HTTP Basic, RFC 6749 §2.3.1), through undici.
 * Answers are cached in a bounded LRU under a SHA-256 of the token (the
 * cache never holds a token), for `cacheTtlMs` and never past the token's
 * `exp`; inactive answers are cached too, so a replayed dead token does not
 * reach the endpoint on every call. Failures are not cached. Concurrent
 * calls with one token share one request.
 */
export function createIntrospectionClient(settings: IntrospectionSettings, deps: IntrospectionClientDeps): IntrospectionClient {
  const cache = createLruCache<{ answer: IntrospectionAnswer; expiresAt: number }>(settings.cacheSize);
  const pending = new Map<string, Promise<IntrospectionAnswer>>();
  const logger = deps.logger?.child({ component: 'authn', introspection: settings.endpoint });
  let requests = 0;
  let hits = 0;
  let failures = 0;

  const ask = async (token: string): Promise<IntrospectionAnswer> => {
    const secret = await deps.secrets(settings.clientSecretFile);
    if (secret === undefined) return { state: 'unavailable', problem: 'client secret unreadable' };
    requests++;
    const credentials = Buffer.from(`${formEncode(settings.clientId)}:${formEncode(secret)}`).toString('base64');
    const res = await fetchJson(settings.endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', authorization: `Basic ${credentials}` },
      body: `token=${formEncode(token)}&token_type_hint=access_token`,
      timeoutMs: settings.timeoutMs,
      maxBytes: MAX_ANSWER_BYTES,
      dispatcher: deps.dispatcher,
    });
    if (!res.ok) return { state: 'unavailable', problem: res.problem };
    const json = res.json;
    if (typeof json !== 'object' || json === null || Array.isArray(json) || typeof (json as { active?: unknown }).active !== 'boolean') {
      return { state: 'unavailable', problem: 'answer has no boolean "active"' };
    }
    // Only `true` counts: RFC 7662 §2.2 makes `active` a boolean, and anything else must not open the door.
    return (json as { active: boolean }).active === true ? { state: 'active', claims: Object.freeze({ ...(json as Record<string, unknown>) }) } : { state: 'inactive' };
  };

  const remember = (key: string, result: IntrospectionAnswer): IntrospectionAnswer => {
    if (result.state === 'unavailable') {
      failures++;
      logger?.warn({ error: result.problem }, 'token introspection failed: calls with this token are refused (503)');
      return result;
    }
    const now = deps.clock.now();
    const exp = result.state === 'active' ? result.claims.exp : undefined;
    const expiresAt = Math.min(now + settings.cacheTtlMs, typeof exp === 'number' ? exp * 1000 : Number.POSITIVE_INFINITY);
    if (expiresAt > now) cache.set(key, { answer: result, expiresAt });
    return result;
  };

  return {
    async introspect(token) {
      const key = createHash('sha256').update(token).digest('base64url');
      const now = deps.clock.now();
      const cached = cache.get(key);
      if (cached && cached.expiresAt > now) {
        hits++;
        return cached.answer;
      }
      if (cached) cache.delete(key);
      let answer = pending.get(key);
      if (!answer) {
        answer = ask(token)
          .then((result) => remember(key, result))
          .finally(() => pending.delete(key));
        pending.set(key, answer);
      }
      return answer;
    },
    stats: () => ({ endpoint: settings.endpoint, cached: cache.size, requests, hits, failures }),
  };
}

/** application/x-www-form-urlencoded, as RFC 6749 §2.3.1 wants for client id and secret too. */
function formEncode(text: string): string {
  return encodeURIComponent(text).replace(/%20/g, '+');
}
