import type { Filter } from '../core/filter.ts';
import { respond } from '../core/verdict.ts';
import { authnKind } from '../filters/authn/authn-filter.ts';
import type { AuthnRuntime } from '../filters/authn/authn-runtime.ts';
import { createAuthnRuntime } from '../filters/authn/authn-runtime.ts';
import type { AuthzRuntime } from '../filters/authz/authz-filter.ts';
import { authzKind, createAuthzRuntime } from '../filters/authz/authz-filter.ts';
import type { FilterDeps } from '../filters/filter-kind.ts';
import type { IPAccessRuntime } from '../filters/ip-access/ip-access-filter.ts';
import { createIPAccessRuntime, ipAccessKind } from '../filters/ip-access/ip-access-filter.ts';
import { rateLimitKind } from '../filters/ratelimit/ratelimit-filter.ts';
import type { RateLimitRuntime } from '../filters/ratelimit/ratelimit-runtime.ts';
import { createRateLimitRuntime } from '../filters/ratelimit/ratelimit-runtime.ts';
import type { ResponseRuntime } from '../filters/response/response-plan.ts';
import { compileResponseFilter } from '../filters/response/response-plan.ts';
import type { UserFilterRuntime } from '../filters/user-filter/user-filter.ts';
import { createUserFilterRuntime } from '../filters/user-filter/user-filter.ts';
import type { ValidateRuntime } from '../filters/validate/validate-filter.ts';
import { createValidateRuntime, validateKind } from '../filters/validate/validate-filter.ts';
import type { PolicyDocument } from '../policy/types.ts';

/**
 * The long-lived state of every inbound filter (ban list, key sets and
 * introspection caches, buckets and the Redis connection, decision ids,
 * metrics, loggers), created once per sidecar so it outlives every chain.
 */
export interface InboundRuntimes {
  readonly ipAccess: IPAccessRuntime;
  readonly authn: AuthnRuntime;
  readonly authz: AuthzRuntime;
  readonly rateLimit: RateLimitRuntime;
  readonly validate: ValidateRuntime;
  /** Route `responses` (cache, hardening) of this workload; without it none apply (policy explain, benches). */
  readonly response?: ResponseRuntime;
  /** Checks of your own (Filter documents): their compiled programs, shared by the snapshots that use them. */
  readonly userFilters: UserFilterRuntime;
}

export interface InboundChainOptions {
  /** What to do with no policy snapshot at all (never received, none on disk). */
  readonly onNoPolicy: 'deny' | 'allow';
  readonly runtimes: InboundRuntimes;
}

/**
 * Runtimes with no metrics, logger or Redis, for what evaluates policy
 * outside a sidecar (policy explain, benches, tests); the sidecar builds its
 * own with its telemetry (src/sidecar/filter-runtimes.ts).
 */
export function createInboundRuntimes(deps: FilterDeps & { readonly allowWhenNoAuthzPolicy: boolean }): InboundRuntimes {
  const base: FilterDeps = { clock: deps.clock, random: deps.random };
  return {
    ipAccess: createIPAccessRuntime(base),
    authn: createAuthnRuntime(base),
    authz: createAuthzRuntime({ ...base, allowWhenNoPolicy: deps.allowWhenNoAuthzPolicy }),
    rateLimit: createRateLimitRuntime(base),
    validate: createValidateRuntime(base),
    userFilters: createUserFilterRuntime(base),
  };
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
  const r = opts.runtimes;
  // Checks of your own join at their stage, and only when a Filter document has one there: no cost otherwise.
  const own = r.userFilters.compile(documents);
  const at = (stage: keyof typeof own): Filter[] => (own[stage] ? [own[stage]] : []);
  const chain = [
    ipAccessKind.compile(documents, r.ipAccess), // ip-access: cheapest refusal, before any token is parsed
    authnKind.compile(documents, r.authn), // authn: JWT and OAuth2 credentials (the mTLS peer is verified by the listener); before authz, which matches requestPrincipals
    ...at('after-authn'),
    authzKind.compile(documents, r.authz), // authz: needs the identities above
    ...at('after-authz'),
    rateLimitKind.compile(documents, r.rateLimit), // rate-limit: after authz, so denied callers spend no budget
    ...at('before-validate'),
    validateKind.compile(documents, r.validate), // validate: last, since it may read and buffer the body (only when a matching rule needs it)
  ];
  // response: marks calls a Route `responses` rule covers (cache, hardening); only after every check, so a cached answer
  // goes only to calls the checks admitted. Absent when no rule applies to this workload.
  const response = r.response && compileResponseFilter(documents, r.response);
  if (response) chain.push(response);
  return chain;
}
