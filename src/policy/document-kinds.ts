import type { z } from 'zod';
import type { JsonSchemaCompiler } from './json-schema.ts';
import { authorizationPolicySchema } from './kinds/authorization-policy.ts';
import type { RegexUse } from './kinds/common.ts';
import { filterSchema } from './kinds/filter.ts';
import { ipAccessPolicySchema } from './kinds/ip-access-policy.ts';
import { rateLimitPolicySchema } from './kinds/rate-limit-policy.ts';
import { requestAuthenticationSchema } from './kinds/request-authentication.ts';
import { routeRegexes, routeSchema } from './kinds/route.ts';
import { validationPolicyRegexes, validationPolicySchema } from './kinds/validation-policy.ts';
import type { PolicyLimits } from './limits.ts';
import type { PolicyKind } from './types.ts';
import { POLICY_KINDS } from './types.ts';

export interface KindDefinition {
  /** The whole document: apiVersion, kind, metadata, spec. */
  readonly schema: z.ZodType;
  /** Regexes of a valid document, to check for catastrophic backtracking. */
  readonly regexes: (doc: never) => RegexUse[];
}

/**
 * The schema of every kind, bound to one set of limits. Each is built on its
 * first use: building all seven takes ~45-95 ms of a sidecar's start-up, and
 * a sidecar's policy usually holds two or three kinds (AuthorizationPolicy
 * alone: ~8 ms).
 */
export function createKindDefinitions(limits: PolicyLimits, jsonSchemaCompiler?: JsonSchemaCompiler): Readonly<Record<PolicyKind, KindDefinition>> {
  const none = (): RegexUse[] => [];
  const build: Record<PolicyKind, () => KindDefinition> = {
    AuthorizationPolicy: () => ({ schema: authorizationPolicySchema(limits), regexes: none }),
    RequestAuthentication: () => ({ schema: requestAuthenticationSchema(limits), regexes: none }),
    RateLimitPolicy: () => ({ schema: rateLimitPolicySchema(limits), regexes: none }),
    IPAccessPolicy: () => ({ schema: ipAccessPolicySchema(limits), regexes: none }),
    ValidationPolicy: () => ({ schema: validationPolicySchema(limits, jsonSchemaCompiler), regexes: validationPolicyRegexes }),
    Route: () => ({ schema: routeSchema(limits), regexes: routeRegexes }),
    Filter: () => ({ schema: filterSchema(limits), regexes: none }),
  };
  const built: Partial<Record<PolicyKind, KindDefinition>> = {};
  const definitions = {} as Record<PolicyKind, KindDefinition>;
  for (const kind of POLICY_KINDS) Object.defineProperty(definitions, kind, { enumerable: true, get: () => (built[kind] ??= build[kind]()) });
  return Object.freeze(definitions);
}
