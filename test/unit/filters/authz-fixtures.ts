import type { CallContext, RequestAuth } from '../../../src/core/call-context.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';
import { createPolicyValidator } from '../../../src/policy/validate.ts';

/* Shared by the authz unit, property and bench code: validated policies and calls. */

const validator = createPolicyValidator();

/** An AuthorizationPolicy through the real validator (defaults filled, exactly as a sidecar receives it). */
export function policy(name: string, spec: Record<string, unknown>, namespace = 'shop'): PolicyDocument {
  const result = validator.validate({ apiVersion: 'meshgate.dev/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace }, spec }, { file: 'test', index: 0 });
  if (!result.ok) throw new Error(`invalid test policy ${name}: ${result.errors.map((e) => `${e.field}: ${e.reason}`).join('; ')}`);
  return result.document.document;
}

export interface CallInput {
  principal?: string;
  method?: string;
  path?: string;
  address?: string;
  authority?: string;
  headers?: Record<string, string | string[]>;
  grpc?: boolean;
  /** `iss/sub` and claims of a verified JWT. */
  jwt?: { principal: string; claims?: Record<string, unknown> };
}

export function call(over: CallInput = {}): CallContext {
  const auth: RequestAuth | undefined = over.jwt
    ? { principal: over.jwt.principal, issuer: over.jwt.principal.split('/').slice(0, -1).join('/'), subject: over.jwt.principal.split('/').at(-1)!, claims: over.jwt.claims ?? {} }
    : undefined;
  return {
    id: 'r1',
    direction: 'inbound',
    startedAt: 0,
    method: over.method ?? 'GET',
    path: over.path ?? '/orders/1',
    query: '',
    authority: over.authority ?? 'orders',
    headers: over.headers ?? {},
    httpVersion: over.grpc ? '2' : '1.1',
    isGrpc: over.grpc ?? false,
    source: { address: over.address ?? '10.0.0.5', port: 1234, principal: over.principal },
    destination: { service: 'orders', namespace: 'shop' },
    annotations: { retries: 0, ...(auth ? { auth } : {}) },
  };
}

export const FRONTEND = 'spiffe://cluster.local/ns/shop/sa/frontend';
export const ADMIN = 'spiffe://cluster.local/ns/ops/sa/admin';

/** A random source that replays fixed values (decision ids become predictable). */
export function fixedRandom(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}
