/*
 * What a peer sidecar's own answer says about the endpoint that gave it.
 *
 * A reply meshgate made (a deny, a failure of the app behind it) carries its
 * reason code in x-meshgate-reason; a reply the app made carries none, because
 * the inbound stack drops an app's copy of the header. Over mutual TLS to a
 * peer sidecar the header is therefore the peer's word, and it splits answers
 * the way Envoy splits local-origin from external-origin errors:
 *
 * - a refusal every endpoint of the service would give alike (a policy deny,
 *   a shared store or identity provider down) is no endpoint failure: it must
 *   not eject the endpoint, be retried on another one, or spend the retry
 *   budget. Ejecting for it moves load onto fewer endpoints exactly when the
 *   system is degraded, and a retry only asks the same question twice;
 * - a failure about that one endpoint (it sheds load, has no policy, its app
 *   is down) counts as the 5xx it maps to, gRPC included, so outlier detection
 *   and retries move load to its healthier peers.
 *
 * From anything but a peer sidecar over mTLS (a plaintext upstream, a service
 * outside the mesh) the header means nothing: the answer is judged by its
 * status alone. A code this table does not know (a newer peer) is too.
 */

import { isReasonCode, reasonCode } from '../core/reason-codes.ts';

/** Answered alike by every endpoint: about the call or the caller, or a dependency all replicas share. */
export const SHARED_REFUSALS: ReadonlySet<string> = new Set([
  'route.not_found',
  'route.unknown_version',
  // A retired or browned-out version is refused by the caller's sidecar, for every endpoint alike.
  'route.version_retired',
  'route.version_brownout',
  'request.malformed',
  'request.invalid_path',
  'request.headers_too_large',
  'request.timeout',
  // Only ever logged (the stream was reset, no answer went out), and about the caller's connection.
  'request.refused_stream',
  'request.body_too_large',
  'request.cancelled',
  // OPTIONS * names no resource: every endpoint answers it alike.
  'request.unsupported',
  'authz.denied',
  'ip.denied',
  // A ban or an empty bucket is about the caller: another endpoint must not be asked to ignore it.
  'ip.banned',
  'ratelimit.exceeded',
  'ratelimit.throttle_queue_full',
  'ratelimit.throttle_delay_exceeded',
  // The counters' Redis is shared: every replica fails closed alike while it is down.
  'ratelimit.unavailable',
  'authn.missing_token',
  'authn.jwt_invalid',
  'authn.jwt_expired',
  'authn.jwt_not_yet_valid',
  'authn.jwt_audience',
  'authn.jwt_issuer',
  'authn.jwt_algorithm',
  // The identity provider is shared too.
  'authn.jwks_unavailable',
  'authn.token_inactive',
  'authn.introspection_unavailable',
  'validate.body_too_large',
  'validate.content_type',
  'validate.missing_header',
  'validate.headers_too_large',
  'validate.schema',
  'validate.malformed_json',
  'validate.json_duplicate_key',
  'validate.json_too_deep',
  'validate.json_too_many_members',
  'validate.json_unsafe_number',
  'validate.json_invalid_utf8',
  'validate.injection',
  // The destination's Route caps its answers: every replica's app gives the same oversize answer to the same call.
  'response.too_large',
  // A check of your own runs the same on every replica: its deny, or its failure mode, would be the same elsewhere.
  'filter.denied',
  'filter.user_check_failed',
]);

/** About the endpoint that answered: its sidecar, its policy state or its app. */
export const ENDPOINT_FAILURES: ReadonlySet<string> = new Set([
  'upstream.timeout',
  'upstream.unavailable',
  'upstream.identity_mismatch',
  'upstream.reset',
  'upstream.overloaded',
  // The peer's app answered something that is not HTTP, or the peer had nowhere to send the call.
  'upstream.protocol_error',
  'upstream.no_endpoint',
  'policy.unavailable',
  'sidecar.overloaded',
  // A concurrency limit is this endpoint's capacity (its calls in flight): another replica may have room.
  'ratelimit.concurrency_exceeded',
  'ratelimit.concurrency_timeout',
  'filter.error',
]);

/** How one response from an endpoint counts for outlier detection and retries. */
export type AnswerKind =
  /** No endpoint failure and no success either: neither counted nor retried. */
  | 'shared-refusal'
  /** A failure of this endpoint, whatever the wire status (a gRPC reply is HTTP 200). */
  | 'endpoint-failure'
  /** Judged by the status, as any upstream's answer. */
  | 'by-status';

/** `reason`: the response's x-meshgate-reason; `fromPeerSidecar`: the endpoint was reached over mesh mTLS. */
export function classifyAnswer(reason: string | undefined, fromPeerSidecar: boolean): AnswerKind {
  if (!fromPeerSidecar || reason === undefined) return 'by-status';
  if (SHARED_REFUSALS.has(reason)) return 'shared-refusal';
  if (ENDPOINT_FAILURES.has(reason) && isReasonCode('data', reason) && reasonCode(reason).http >= 500) return 'endpoint-failure';
  return 'by-status';
}

/** The reason header of a response head, when it is one value. */
export function reasonOf(headers: Readonly<Record<string, string | string[] | undefined>>): string | undefined {
  const value = headers['x-meshgate-reason'];
  return typeof value === 'string' ? value : undefined;
}
