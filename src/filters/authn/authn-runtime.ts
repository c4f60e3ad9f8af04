import type { Dispatcher } from 'undici';
import type { Clock } from '../../core/clock.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { FilterDeps } from '../filter-kind.ts';
import type { IntrospectionClient, IntrospectionSettings } from './introspection-client.ts';
import { createIntrospectionClient } from './introspection-client.ts';
import type { JwksCache, JwksCacheStats, JwksTimings } from './jwks-cache.ts';
import { createJwksCache, DEFAULT_JWKS_TIMINGS } from './jwks-cache.ts';
import { createSecretFiles } from './secret-files.ts';

/** Where `introspection.clientSecretFile` names are looked up unless the sidecar says otherwise. */
const DEFAULT_AUTHN_SECRETS_DIR = '/var/run/secrets/meshgate/authn';

export interface AuthnRuntimeDeps extends FilterDeps {
  readonly logger?: Logger;
  /** undici dispatcher for JWKS and introspection requests; undici's global one when omitted. */
  readonly dispatcher?: Dispatcher;
  /** Called once per would-deny of a document in shadow mode (`namespace/name`, rule name): the shadow-denial counter. */
  readonly onShadowDenial?: (policy: string, rule: string) => void;
  /** Folder of introspection client secrets (operator-mounted); default DEFAULT_AUTHN_SECRETS_DIR. */
  readonly secretsDir?: string;
  readonly jwksTimings?: Partial<JwksTimings>;
}

/**
 * What the authentication filter keeps across policy snapshots: fetched key
 * sets and introspection caches (a new snapshot must not refetch every JWKS
 * or forget every introspected token), plus the injected clock, dispatcher,
 * logger and shadow counter. One per sidecar; the filter itself is rebuilt
 * per snapshot and holds no state of its own.
 */
export interface AuthnRuntime {
  readonly clock: Clock;
  readonly logger: Logger | undefined;
  readonly onShadowDenial: ((policy: string, rule: string) => void) | undefined;
  jwks(uri: string): JwksCache;
  introspection(settings: IntrospectionSettings): IntrospectionClient;
  /** Drops caches the snapshot in force no longer names. */
  retain(uris: ReadonlySet<string>, introspections: readonly IntrospectionSettings[]): void;
  /** For /config_dump: key sets (age, failures) and introspection caches; never a key or token. */
  stats(): { readonly jwks: JwksCacheStats[]; readonly introspection: Array<ReturnType<IntrospectionClient['stats']>> };
}

export function createAuthnRuntime(deps: AuthnRuntimeDeps): AuthnRuntime {
  const timings: JwksTimings = { ...DEFAULT_JWKS_TIMINGS, ...deps.jwksTimings };
  const secrets = createSecretFiles(deps.secretsDir ?? DEFAULT_AUTHN_SECRETS_DIR, { clock: deps.clock, ...(deps.logger ? { logger: deps.logger } : {}) });
  const keySets = new Map<string, JwksCache>();
  const introspectors = new Map<string, IntrospectionClient>();
  const introspectionKey = (s: IntrospectionSettings): string => JSON.stringify([s.endpoint, s.clientId, s.clientSecretFile, s.cacheTtlMs, s.cacheSize, s.timeoutMs]);
  return {
    clock: deps.clock,
    logger: deps.logger,
    onShadowDenial: deps.onShadowDenial,
    jwks(uri) {
      let cache = keySets.get(uri);
      if (!cache) {
        cache = createJwksCache(uri, { clock: deps.clock, timings, ...(deps.dispatcher ? { dispatcher: deps.dispatcher } : {}), ...(deps.logger ? { logger: deps.logger } : {}) });
        keySets.set(uri, cache);
      }
      return cache;
    },
    introspection(settings) {
      const key = introspectionKey(settings);
      let client = introspectors.get(key);
      if (!client) {
        client = createIntrospectionClient(settings, { clock: deps.clock, secrets, ...(deps.dispatcher ? { dispatcher: deps.dispatcher } : {}), ...(deps.logger ? { logger: deps.logger } : {}) });
        introspectors.set(key, client);
      }
      return client;
    },
    retain(uris, introspections) {
      for (const uri of keySets.keys()) if (!uris.has(uri)) keySets.delete(uri);
      const keep = new Set(introspections.map(introspectionKey));
      for (const key of introspectors.keys()) if (!keep.has(key)) introspectors.delete(key);
    },
    stats: () => ({ jwks: [...keySets.values()].map((c) => c.stats()), introspection: [...introspectors.values()].map((c) => c.stats()) }),
  };
}
