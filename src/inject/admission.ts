import type { InjectionOutcome, InjectionSettings } from './pod-injection.ts';
import { injectPod } from './pod-injection.ts';

/*
 * AdmissionReview v1 in, AdmissionReview v1 out: the webhook's decision for
 * one request, apart from HTTP so it can be read (and tested) as data. The
 * same injectPod as `meshgate inject`; its changes become JSON Patch `add`
 * operations (an `add` on an existing member replaces it, RFC 6902 4.1).
 */

export interface AdmissionDecision {
  /** The AdmissionReview to send back. */
  readonly review: Record<string, unknown>;
  /** For logs and metrics: injected, skipped, refused, or ignored (not a pod creation). */
  readonly result: 'injected' | 'skipped' | 'refused' | 'ignored';
  readonly detail: string;
  readonly dryRun: boolean;
  /** `namespace/name` (or generateName) of the pod, for the log. */
  readonly pod: string;
}

/** A request that is not an AdmissionReview v1 the webhook can answer. */
export class AdmissionReviewError extends Error {
  override readonly name = 'AdmissionReviewError';
}

type Json = Record<string, unknown>;

export function decideAdmission(body: unknown, settings: InjectionSettings): AdmissionDecision {
  const review = asObject(body);
  if (review.apiVersion !== 'admission.k8s.io/v1' || review.kind !== 'AdmissionReview') {
    throw new AdmissionReviewError(`expected an AdmissionReview of apiVersion admission.k8s.io/v1, got ${JSON.stringify(review.kind ?? null)} ${JSON.stringify(review.apiVersion ?? null)}`);
  }
  const request = asObject(review.request);
  if (typeof request.uid !== 'string' || request.uid === '') throw new AdmissionReviewError('request.uid: missing');
  const uid = request.uid;
  const dryRun = request.dryRun === true;
  const object = asObject(request.object);
  const metadata = asObject(object.metadata);
  const namespace = typeof request.namespace === 'string' && request.namespace !== '' ? request.namespace : typeof metadata.namespace === 'string' ? metadata.namespace : 'default';
  const podName = typeof metadata.name === 'string' && metadata.name !== '' ? metadata.name : typeof metadata.generateName === 'string' ? `${metadata.generateName}*` : '(unnamed)';
  const pod = `${namespace}/${podName}`;
  const answer = (response: Json, result: AdmissionDecision['result'], detail: string): AdmissionDecision => ({
    review: { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid, ...response } },
    result,
    detail,
    dryRun,
    pod,
  });

  const kind = asObject(request.kind);
  const resource = asObject(request.resource);
  const isPodCreate = kind.kind === 'Pod' && (kind.group ?? '') === '' && resource.resource === 'pods' && !request.subResource && request.operation === 'CREATE';
  // Anything else this webhook is sent (a misconfigured rule) is let through untouched: it only ever adds to new pods.
  if (!isPodCreate) return answer({ allowed: true }, 'ignored', `${String(request.operation)} ${String(kind.kind)}${request.subResource ? `/${String(request.subResource)}` : ''}`);
  if (request.object === undefined || request.object === null) throw new AdmissionReviewError('request.object: missing for a CREATE');

  const outcome: InjectionOutcome = injectPod({ metadata: object.metadata, spec: object.spec, namespace }, settings);
  switch (outcome.status) {
    case 'skipped':
      return answer({ allowed: true }, 'skipped', outcome.reason);
    case 'refused':
      return answer({ allowed: false, status: { code: 400, reason: 'BadRequest', message: `meshgate: ${outcome.message}` } }, 'refused', outcome.message);
    case 'injected': {
      const patch = outcome.changes.map((change) => ({ op: 'add', path: `/${change.path.map(escapePointer).join('/')}`, value: change.value }));
      // The API server always sends metadata; should it not, the patch still applies (a spec exists: it has containers).
      const parents = typeof object.metadata === 'object' && object.metadata !== null ? [] : [{ op: 'add', path: '/metadata', value: {} }];
      const encoded = Buffer.from(JSON.stringify([...parents, ...patch])).toString('base64');
      // Warnings reach the user who created the object (kubectl prints them), e.g. through the Deployment's controller events.
      return answer(
        { allowed: true, patchType: 'JSONPatch', patch: encoded, ...(outcome.warnings.length > 0 ? { warnings: outcome.warnings.map((w) => `meshgate: ${w}`) } : {}) },
        'injected',
        `service ${outcome.service}`,
      );
    }
  }
}

/** RFC 6901: "~" and "/" inside a key. */
function escapePointer(key: string): string {
  return key.replaceAll('~', '~0').replaceAll('/', '~1');
}

function asObject(value: unknown): Json {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Json) : {};
}
