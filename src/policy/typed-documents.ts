import type { AuthorizationPolicyDocument } from './kinds/authorization-policy.ts';
import type { FilterDocument } from './kinds/filter.ts';
import type { IPAccessPolicyDocument } from './kinds/ip-access-policy.ts';
import type { RateLimitPolicyDocument } from './kinds/rate-limit-policy.ts';
import type { RequestAuthenticationDocument } from './kinds/request-authentication.ts';
import type { RouteDocument } from './kinds/route.ts';
import type { ValidationPolicyDocument } from './kinds/validation-policy.ts';
import type { PolicyDocument, PolicyKind } from './types.ts';

/*
 * The typed view of validated documents, apart from the kinds' schemas
 * (document-kinds.ts): the filters narrow documents with it on every
 * snapshot, and must not load zod schemas or the JSON Schema compiler to do so.
 */

/** A validated document with its spec typed by kind: narrow with `isKind`. */
export type TypedPolicyDocument =
  | AuthorizationPolicyDocument
  | RequestAuthenticationDocument
  | RateLimitPolicyDocument
  | IPAccessPolicyDocument
  | ValidationPolicyDocument
  | RouteDocument
  | FilterDocument;

export type DocumentOfKind<K extends PolicyKind> = Extract<TypedPolicyDocument, { kind: K }>;

/**
 * Narrows a document to its kind's typed shape. Only sound for documents that
 * went through a PolicyValidator (every document of a ValidDocument or of a
 * snapshot the sidecar accepted did).
 */
export function isKind<K extends PolicyKind>(doc: PolicyDocument, kind: K): doc is PolicyDocument & DocumentOfKind<K> {
  return doc.kind === kind;
}
