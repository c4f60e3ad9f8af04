import type { Filter } from '../core/filter.ts';
import { respond } from '../core/verdict.ts';
import { createAuthnFilter } from '../filters/authn/authn-filter.ts';
import type { AuthnRuntime } from '../filters/authn/authn-runtime.ts';
import { createAuthzFilter } from '../filters/authz/authz-filter.ts';
import type { AuthzRuntime } from '../filters/authz/authz-filter.ts';
import type { BanList } from '../filters/ip-access/ban-list.ts';
import { createRateLimitFilter } from '../filters/ratelimit/ratelimit-filter.ts';
import type { RateLimitRuntime } from '../filters/ratelimit/ratelimit-runtime.ts';
import { createLocalBuckets } from '../filters/ratelimit/local-buckets.ts';
import { systemClock } from '../core/clock.ts';
import { createIPAccessFilter } from '../filters/ip-access/ip-access-filter.ts';
import { createValidateFilter } from '../filters/validate/validate-filter.ts';
import type { ValidateRuntime } from '../filters/validate/validate-filter.ts';
import type { PolicyDocument } from '../policy/types.ts';

export interface InboundChainOptions {
  /** What to do with no policy snapshot at all (never received, none on disk). */
  readonly onNoPolicy: 'deny' | 'allow';
  /** Mesh-wide switch: admit calls when no ALLOW policy applies to the workload. */
  readonly allowWhenNoAuthzPolicy: boolean;
  /**
   * Key sets and introspection caches of request authentication, created once
   * per sidecar so they outlive every chain. Without it each chain gets its own
   * (JWKS fetched again after every snapshot, shadow denials not counted).
   */
  readonly authn?: AuthnRuntime;
  /** Decision ids, metrics and the decision log of authorization, created once per sidecar. */
  readonly authz?: AuthzRuntime;
  /** Decision ids, metrics and the log of input validation, created once per sidecar. */
  readonly validate?: ValidateRuntime;
  /** limits.maxBodyBuffer: the most of one request body the validate filter holds; 1 MiB when absent. */
  readonly maxBodyBuffer?: number;
  /**
   * The sidecar's auto-ban list, created once: it outlives every chain. Building
   * a chain installs the snapshot's autoBan settings into it (see createIPAccessFilter).
   */
  readonly banList?: BanList;
  /**
   * Buckets and the Redis connection of rate limiting, created once per sidecar
   * so counts survive a new snapshot. Without it each chain counts from full
   * in its own buckets, with no Redis (global rules apply their failureMode).
   */
  readonly rateLimit?: RateLimitRuntime;
}

function unusablePolicy(keys: readonly string[]): Filter {
  return {
    name: 'unusable-policy',
    onRequest: () => respond('policy.unavailable', `policy ${keys[0]}${keys.length > 1 ? ` and ${keys.length - 1} more` : ''} could not be applied; admitting nothing`),
  };
}

/** Admits nothing: the fail-closed chain of a sidecar that has never had a policy. */
const NO_POLICY: Filter = {
  name: 'no-policy',
  onRequest: () => respond('policy.unavailable', 'no policy snapshot yet; admitting nothing until one arrives'),
};

/**
 * The inbound filter chain for one policy snapshot, in the order of
 * ARCHITECTURE.md. Built once per snapshot version; calls only run it.
 * `documents` undefined means no snapshot at all.
 */
export function buildInboundChain(
  documents: readonly PolicyDocument[] | undefined,
  opts: InboundChainOptions,
  /** Enforcing documents the server sent that this sidecar could not use and has no older copy of. */
  missing: readonly string[] = [],
): readonly Filter[] {
  if (documents === undefined) return opts.onNoPolicy === 'deny' ? [NO_POLICY] : [];
  // A DENY rule we could not read must not turn into an allow: admit nothing until it is fixed.
  if (missing.length > 0) return [unusablePolicy(missing)];
  return [
    createIPAccessFilter(documents, { banList: opts.banList }), // ip-access: cheapest refusal, before any token is parsed
    createAuthnFilter(documents, opts.authn), // authn: JWT and OAuth2 credentials (the mTLS peer is verified by the listener); before authz, which matches requestPrincipals
    createAuthzFilter(documents, { ...opts.authz, allowWhenNoPolicy: opts.allowWhenNoAuthzPolicy }), // authz: needs the identities above
    createRateLimitFilter(documents, opts.rateLimit ?? { local: createLocalBuckets(100_000), clock: systemClock }), // rate-limit: after authz, so denied callers spend no budget
    createValidateFilter(documents, { ...opts.validate, maxBodyBuffer: opts.maxBodyBuffer ?? 1_048_576 }), // validate: last, since it may read and buffer the body (only when a matching rule needs it)
  ];
}
