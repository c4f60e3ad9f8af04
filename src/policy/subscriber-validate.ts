import { POLICY_API_VERSION, POLICY_KINDS } from './types.ts';
import type { DocumentKey, PolicyDocument } from './types.ts';

/** One refused document, as the Ack carries it: kind/namespace/name, field path, reason. */
export interface DocumentRejection {
  readonly document: DocumentKey;
  readonly field: string;
  readonly reason: string;
}

/** A document as the server sends it (and as the disk copy keeps it): its JSON and the digest of it. */
export interface DocumentEnvelope {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  readonly json: string;
  readonly digest: string;
}

/**
 * Checks one parsed document the way the policy model does. Returns the
 * typed document, or the problems (field path inside the document + reason).
 */
export type DocumentValidator = (
  raw: unknown,
) => { readonly ok: true; readonly document: PolicyDocument } | { readonly ok: false; readonly errors: readonly { readonly field: string; readonly reason: string }[] };

export function documentKey(kind: string, namespace: string, name: string): DocumentKey {
  return `${kind}/${namespace}/${name}`;
}

const KINDS: ReadonlySet<string> = new Set(POLICY_KINDS);

/**
 * The envelope-level checks only: apiVersion, a known kind, metadata.
 * TODO(policy-model): compose with the model's per-document validator (spec
 * checks per kind) once src/policy exports it; pass it as `validate` meanwhile.
 */
export const validateDocumentShape: DocumentValidator = (raw) => {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return fail('', 'expected an object');
  const doc = raw as Record<string, unknown>;
  if (doc.apiVersion !== POLICY_API_VERSION) return fail('apiVersion', `expected ${POLICY_API_VERSION}, got ${JSON.stringify(doc.apiVersion) ?? 'nothing'}`);
  if (typeof doc.kind !== 'string' || !KINDS.has(doc.kind)) return fail('kind', `unknown kind ${JSON.stringify(doc.kind) ?? 'nothing'} (expected one of ${POLICY_KINDS.join(', ')})`);
  const metadata = doc.metadata as Record<string, unknown> | undefined;
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) return fail('metadata', 'expected an object');
  if (typeof metadata.name !== 'string' || metadata.name === '') return fail('metadata.name', 'expected a non-empty string');
  if (typeof metadata.namespace !== 'string' || metadata.namespace === '') return fail('metadata.namespace', 'expected a non-empty string');
  if (doc.spec === null || typeof doc.spec !== 'object' || Array.isArray(doc.spec)) return fail('spec', 'expected an object');
  return { ok: true, document: doc as unknown as PolicyDocument };
};

function fail(field: string, reason: string): { ok: false; errors: { field: string; reason: string }[] } {
  return { ok: false, errors: [{ field, reason }] };
}

/**
 * Parses and validates one received document. The envelope's kind, namespace
 * and name must match the document: the key decides which last-good copy a
 * refusal falls back to, so a mismatch is itself a refusal.
 */
export function checkEnvelope(
  envelope: DocumentEnvelope,
  validate: DocumentValidator,
): { readonly ok: true; readonly document: PolicyDocument } | { readonly ok: false; readonly errors: readonly DocumentRejection[] } {
  const key = documentKey(envelope.kind, envelope.namespace, envelope.name);
  let raw: unknown;
  try {
    raw = JSON.parse(envelope.json);
  } catch (err) {
    return { ok: false, errors: [{ document: key, field: '', reason: `document is not JSON: ${(err as Error).message}` }] };
  }
  let result: ReturnType<DocumentValidator>;
  try {
    result = validate(raw);
  } catch (err) {
    // A validator bug must refuse one document, not end the stream.
    return { ok: false, errors: [{ document: key, field: '', reason: `validator failed: ${(err as Error).message}` }] };
  }
  if (!result.ok) return { ok: false, errors: result.errors.map((e) => ({ document: key, field: e.field, reason: e.reason })) };
  const { kind, metadata } = result.document;
  if (kind !== envelope.kind) return { ok: false, errors: [{ document: key, field: 'kind', reason: `document says ${kind}, envelope says ${envelope.kind}` }] };
  if (metadata.namespace !== envelope.namespace) {
    return { ok: false, errors: [{ document: key, field: 'metadata.namespace', reason: `document says ${metadata.namespace}, envelope says ${envelope.namespace}` }] };
  }
  if (metadata.name !== envelope.name) return { ok: false, errors: [{ document: key, field: 'metadata.name', reason: `document says ${metadata.name}, envelope says ${envelope.name}` }] };
  return result;
}
