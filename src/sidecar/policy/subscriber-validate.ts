import { documentKeyOf } from '../../policy/policy-error.ts';
import type { DocumentKey, PolicyDocument } from '../../policy/types.ts';
import type { PolicyValidator } from '../../policy/validate.ts';
import { createPolicyValidator } from '../../policy/validate.ts';

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
  /** Filter documents: the source as JavaScript, types stripped by the policy server (compiled for that exact source only). */
  readonly javascript?: string;
}

/**
 * Checks one parsed document the way the policy model does. Returns the
 * typed document, or the problems (field path inside the document + reason).
 */
export type DocumentValidator = (
  raw: unknown,
) => { readonly ok: true; readonly document: PolicyDocument } | { readonly ok: false; readonly errors: readonly { readonly field: string; readonly reason: string }[] };

export function documentKey(kind: string, namespace: string, name: string): DocumentKey {
  return documentKeyOf(kind, namespace, name);
}

/** Where refusals of received documents say they come from (the model's errors carry a source). */
const STREAM_SOURCE = Object.freeze({ file: 'policy-stream', index: 0 });

/**
 * The policy model's validator (src/policy/validate.ts), the same one the
 * server ran: its output validates to itself, so a document the server sent
 * passes here unless the two disagree (version skew, different limits) or
 * the bytes were damaged. Pass a validator built with the server's limits
 * when they differ from the defaults.
 */
export function policyModelValidator(validator: PolicyValidator = createPolicyValidator()): DocumentValidator {
  return (raw) => {
    const result = validator.validate(raw, STREAM_SOURCE);
    if (result.ok) return { ok: true, document: result.document.document };
    return { ok: false, errors: result.errors.map((e) => ({ field: e.field, reason: e.reason })) };
  };
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
