import type { z } from 'zod';
import type { AuthorizationPolicyDocument } from './kinds/authorization-policy.ts';
import { authorizationPolicySchema } from './kinds/authorization-policy.ts';
import type { RegexUse } from './kinds/common.ts';
import type { IPAccessPolicyDocument } from './kinds/ip-access-policy.ts';
import { ipAccessPolicySchema } from './kinds/ip-access-policy.ts';
import type { RateLimitPolicyDocument } from './kinds/rate-limit-policy.ts';
import { rateLimitPolicySchema } from './kinds/rate-limit-policy.ts';
import type { RequestAuthenticationDocument } from './kinds/request-authentication.ts';
import { requestAuthenticationSchema } from './kinds/request-authentication.ts';
import type { RouteDocument } from './kinds/route.ts';
import { routeRegexes, routeSchema } from './kinds/route.ts';
import type { ValidationPolicyDocument } from './kinds/validation-policy.ts';
import { validationPolicyRegexes, validationPolicySchema } from './kinds/validation-policy.ts';
import type { PolicyLimits } from './limits.ts';
import type { PolicyDocument, PolicyKind } from './types.ts';

/** A validated document with its spec typed by kind: narrow with `isKind`. */
export type TypedPolicyDocument = AuthorizationPolicyDocument | RequestAuthenticationDocument | RateLimitPolicyDocument | IPAccessPolicyDocument | ValidationPolicyDocument | RouteDocument;

export type DocumentOfKind<K extends PolicyKind> = Extract<TypedPolicyDocument, { kind: K }>;

/**
 * Narrows a document to its kind's typed shape. Only sound for documents that
 * went through a PolicyValidator (every document of a ValidDocument or of a
 * snapshot the sidecar accepted did).
 */
export function isKind<K extends PolicyKind>(doc: PolicyDocument, kind: K): doc is PolicyDocument & DocumentOfKind<K> {
  return doc.kind === kind;
}

export interface KindDefinition {
  /** The whole document: apiVersion, kind, metadata, spec. */
  readonly schema: z.ZodType;
  /** Regexes of a valid document, to check for catastrophic backtracking. */
  readonly regexes: (doc: never) => RegexUse[];
}

/** The schema of every kind, bound to one set of limits. */
export function createKindDefinitions(limits: PolicyLimits): Readonly<Record<PolicyKind, KindDefinition>> {
  const none = (): RegexUse[] => [];
  return Object.freeze({
    AuthorizationPolicy: { schema: authorizationPolicySchema(limits), regexes: none },
    RequestAuthentication: { schema: requestAuthenticationSchema(limits), regexes: none },
    RateLimitPolicy: { schema: rateLimitPolicySchema(limits), regexes: none },
    IPAccessPolicy: { schema: ipAccessPolicySchema(limits), regexes: none },
    ValidationPolicy: { schema: validationPolicySchema(limits), regexes: validationPolicyRegexes },
    Route: { schema: routeSchema(limits), regexes: routeRegexes },
  });
}
