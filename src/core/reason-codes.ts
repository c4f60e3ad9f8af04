/**
 * Every reason code meshgate answers with, in one table: what it means and
 * the status it maps to on the surface that answers with it. Codes are part
 * of the contract (users alert on them, scripts branch on them); a unit test
 * checks that the README documents each with its statuses.
 *
 * One section per surface, each code in exactly one:
 * - data: the sidecars' deny and error replies, to HTTP callers (`http`) and
 *   gRPC callers (`grpc`, in a trailers-only reply);
 * - ca: the CA's refusals of a signing, gRPC only (the code also in the
 *   `meshgate-reason` trailer and the audit record);
 * - admin: the admin listeners' and the policy server's admin API errors,
 *   HTTP only (`{code, reason}` as JSON).
 */

interface DataPlaneEntry {
  readonly http: number;
  /** gRPC status code number (grpc/status.h). */
  readonly grpc: number;
  readonly description: string;
}

interface CaEntry {
  readonly grpc: number;
  readonly description: string;
}

interface AdminEntry {
  readonly http: number;
  readonly description: string;
}

export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

const DATA = {
  'route.not_found': {
    http: 404,
    grpc: GrpcStatus.UNIMPLEMENTED,
    description:
      'No such service (never known to this sidecar: not in the registry, the static services, a Route or policy.destinations), or no route of it matches the request path, method or headers.',
  },
  'route.unknown_version': {
    // 404 like route.not_found: the request is well-formed, what it names does not exist (or no longer does, once operators remove a version).
    http: 404,
    grpc: GrpcStatus.NOT_FOUND,
    description: 'The call pins a version (x-meshgate-version) that the Route of its destination does not declare; the reply does not list the versions.',
  },
  'route.version_retired': {
    // 410 Gone: the version existed and is gone for good; not 404, which says it never did.
    http: 410,
    grpc: GrpcStatus.NOT_FOUND,
    description:
      'The call resolves to a Route version marked retired (pinned with x-meshgate-version, or the route backend\'s subset lies within it); the reply names the successor when the Route gives one (Link rel="successor-version" for a URL).',
  },
  'route.version_brownout': {
    // 410 like a retired version: a brown-out rehearses the retirement so callers notice; NOT_FOUND, not UNAVAILABLE, so gRPC clients do not retry it.
    http: 410,
    grpc: GrpcStatus.NOT_FOUND,
    description: 'The call resolves to a Route version inside one of its scheduled brown-out windows; the reply says until when and names the successor when the Route gives one.',
  },
  'request.malformed': {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description: 'The request could not be parsed, its request line is not single-space separated, or its authority is missing, repeated (two Host headers) or not a host name or address.',
  },
  'request.invalid_path': {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description:
      'The path cannot be normalized safely: an encoded "/" or "\\" (%2F, %5C), a malformed escape, NUL, a control character, a raw "\\" or "#", a double-encoded ".", "/", "\\", "%" or NUL, or a dot segment with ";" parameters.',
  },
  'request.unsupported': {
    http: 501,
    grpc: GrpcStatus.UNIMPLEMENTED,
    description:
      'The request has a form meshgate does not forward: OPTIONS * (asterisk-form), which asks about the server as a whole rather than a resource, or CONNECT, a tunnel meshgate does not open.',
  },
  'request.headers_too_large': {
    http: 431,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description: 'The request head exceeds limits.maxHeaderSize or has more fields than limits.maxHeadersCount.',
  },
  'request.refused_stream': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description:
      'HTTP/2: the caller opened more concurrent streams than limits.http2MaxConcurrentStreams; the stream was reset with REFUSED_STREAM (safe to retry) and is logged as the 503 it would have had.',
  },
  'request.timeout': {
    http: 408,
    grpc: GrpcStatus.DEADLINE_EXCEEDED,
    description:
      'The caller did not send the request head within limits.headersTimeout, or the request within limits.requestTimeout, or stopped sending its body for limits.idleTimeout (then logged, the connection closed).',
  },
  'request.body_too_large': {
    http: 413,
    grpc: GrpcStatus.RESOURCE_EXHAUSTED,
    description: 'A filter needed the body and it exceeded the configured buffer limit.',
  },
  'upstream.timeout': {
    http: 504,
    grpc: GrpcStatus.DEADLINE_EXCEEDED,
    description: 'The upstream did not answer within the route timeout (all attempts included), or sent nothing for limits.idleTimeout while the call waited for or relayed its response.',
  },
  'upstream.unavailable': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description: 'No healthy endpoint, or every attempt failed to connect.',
  },
  'upstream.no_endpoint': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description:
      'The destination is a known service (in the registry, a static services entry, the destination of a Route in force, in policy.destinations, or listed by the registry earlier) with no endpoint right now.',
  },
  'upstream.identity_mismatch': {
    http: 502,
    grpc: GrpcStatus.UNAVAILABLE,
    description: "The upstream's certificate is valid but its SPIFFE ID is not one the destination is expected to have.",
  },
  'upstream.reset': {
    http: 502,
    grpc: GrpcStatus.UNAVAILABLE,
    description: 'The upstream closed or reset the connection before its response was complete.',
  },
  'upstream.protocol_error': {
    http: 502,
    grpc: GrpcStatus.UNAVAILABLE,
    description:
      'The upstream answered with something that is not valid HTTP: a malformed status line, header or chunk, headers beyond the parser limit, or a body that does not match its Content-Length.',
  },
  'response.too_large': {
    http: 502,
    // As gRPC itself answers a message over its size limit.
    grpc: GrpcStatus.RESOURCE_EXHAUSTED,
    description:
      "The app's response is larger than its Route's `responses[].hardening.maxResponseBytes`: refused with this 502 when its Content-Length says so, or cut off (the caller reset) when it grows past the cap while streaming; either way logged and counted once with this reason.",
  },
  'upstream.overloaded': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description: 'The upstream connection pool queue for this endpoint is full.',
  },
  'authz.denied': {
    http: 403,
    grpc: GrpcStatus.PERMISSION_DENIED,
    description: 'An AuthorizationPolicy denied the call (a DENY rule matched, no ALLOW rule matched, or no ALLOW policy applies: deny by default).',
  },
  'ip.denied': {
    http: 403,
    grpc: GrpcStatus.PERMISSION_DENIED,
    description: "An IPAccessPolicy refused the client's address (in a deny list, outside an allow list, or not determinable from x-forwarded-for).",
  },
  'ip.banned': {
    http: 429,
    grpc: GrpcStatus.RESOURCE_EXHAUSTED,
    description: 'The client address is on the temporary auto-ban list after repeated refused calls; retry-after says when the ban ends.',
  },
  'ratelimit.exceeded': {
    http: 429,
    grpc: GrpcStatus.RESOURCE_EXHAUSTED,
    description: "A RateLimitPolicy rule's bucket for this caller is empty; retry-after says when a call will be admitted again.",
  },
  'ratelimit.throttle_queue_full': {
    http: 429,
    grpc: GrpcStatus.RESOURCE_EXHAUSTED,
    description:
      "A RateLimitPolicy rule with throttle: the caller's bucket is empty and its queue already holds throttle.queue callers (or the sidecar holds rateLimit.maxQueuedCalls waiting calls); retry-after says when a call would have its turn.",
  },
  'ratelimit.throttle_delay_exceeded': {
    http: 429,
    grpc: GrpcStatus.RESOURCE_EXHAUSTED,
    description:
      "A RateLimitPolicy rule with throttle: the caller's turn in its bucket's queue would come later than throttle.maxDelay, so it is refused at once instead of waiting; retry-after says when its turn would have come.",
  },
  'ratelimit.concurrency_exceeded': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description:
      "A RateLimitPolicy concurrency rule: concurrency.max calls (of this key) are in flight and the rule's queue is full (or it has none, or the sidecar holds rateLimit.maxQueuedCalls waiting calls).",
  },
  'ratelimit.concurrency_timeout': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description: 'A RateLimitPolicy concurrency rule: the call waited concurrency.maxWait in its queue and no call in flight finished.',
  },
  'ratelimit.unavailable': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description:
      'A scope: global rate-limit rule could not be counted (Redis unreachable, slower than rateLimit.redis.timeout, or not configured) and its failureMode is deny (the default): the call fails closed.',
  },
  'authn.missing_token': {
    http: 401,
    grpc: GrpcStatus.UNAUTHENTICATED,
    description: 'The call carries no token (in the locations the RequestAuthentication rules name) and a document says onMissingToken: deny (the default).',
  },
  'authn.jwt_invalid': {
    http: 401,
    grpc: GrpcStatus.UNAUTHENTICATED,
    description: 'The token is not a well-formed JWT, its signature does not verify with a key of its issuer (unknown kid included), it lacks exp, or the request carries two different tokens.',
  },
  'authn.jwt_expired': {
    http: 401,
    grpc: GrpcStatus.UNAUTHENTICATED,
    description: "The JWT is past its exp (beyond the rule's clockSkew).",
  },
  'authn.jwt_not_yet_valid': {
    http: 401,
    grpc: GrpcStatus.UNAUTHENTICATED,
    description: "The JWT's nbf (or iat) is in the future (beyond the rule's clockSkew).",
  },
  'authn.jwt_audience': {
    http: 401,
    grpc: GrpcStatus.UNAUTHENTICATED,
    description: "The JWT's aud holds none of the rule's audiences.",
  },
  'authn.jwt_issuer': {
    http: 401,
    grpc: GrpcStatus.UNAUTHENTICATED,
    description: "No JWT rule (and no introspection) accepts the token's issuer, or not in the location the token was sent in.",
  },
  'authn.jwt_algorithm': {
    http: 401,
    grpc: GrpcStatus.UNAUTHENTICATED,
    description: "The JWT's alg is not in the rule's allow-list (none and HS* never are).",
  },
  'authn.jwks_unavailable': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description: "The issuer's key set could not be fetched and none is cached: the call fails closed.",
  },
  'authn.token_inactive': {
    http: 401,
    grpc: GrpcStatus.UNAUTHENTICATED,
    description: "The introspection endpoint says the token is not active, or the answer's exp, nbf, iss or aud does not fit.",
  },
  'authn.introspection_unavailable': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description: 'The introspection endpoint failed, timed out or answered without a boolean active (or the client secret is unreadable): the call fails closed.',
  },
  'validate.body_too_large': {
    http: 413,
    grpc: GrpcStatus.RESOURCE_EXHAUSTED,
    description:
      "A ValidationPolicy rule's maxBodyBytes is exceeded (by the declared Content-Length or by the bytes read), a body a rule must read is larger than limits.maxBodyBuffer, or a call carries more text than the rule's injection.maxInspectBytes.",
  },
  'validate.content_type': {
    http: 415,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description: "The call carries a body whose Content-Type is missing or not in the ValidationPolicy rule's contentTypes.",
  },
  'validate.missing_header': {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description: "A header in the ValidationPolicy rule's requiredHeaders is absent or empty.",
  },
  'validate.headers_too_large': {
    http: 431,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description: "The request headers exceed the ValidationPolicy rule's maxHeaderBytes.",
  },
  'validate.schema': {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description: "The JSON body does not satisfy the ValidationPolicy rule's jsonSchema; the reason names the first failing JSON pointer and what is wrong.",
  },
  'validate.malformed_json': {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description:
      'A ValidationPolicy rule that reads the body as JSON (a jsonSchema or json limits; injection detection on a JSON content type) matched, and the body is not JSON (or absent or empty where a jsonSchema or json requires one).',
  },
  'validate.json_duplicate_key': {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description: 'A JSON body a ValidationPolicy rule reads repeats a key in one object (JSON.parse would keep the last; a validator reading the first would disagree).',
  },
  'validate.json_too_deep': {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description: "A JSON body a ValidationPolicy rule reads nests objects and arrays deeper than the rule's json.maxDepth (default 64).",
  },
  'validate.json_too_many_members': {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description:
      'A JSON body a ValidationPolicy rule reads has an object with more members than json.maxObjectMembers (default 1000) or an array with more items than json.maxArrayItems (default 10000).',
  },
  'validate.json_unsafe_number': {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description:
      'A JSON body a ValidationPolicy rule reads has an integer beyond 2^53 - 1 or a number that overflows, which JSON parsers do not hold exactly (json.unsafeNumbers: refuse, the default).',
  },
  'validate.json_invalid_utf8': {
    http: 400,
    grpc: GrpcStatus.INVALID_ARGUMENT,
    description: 'A JSON body a ValidationPolicy rule reads is not valid UTF-8, or escapes a lone surrogate (\\ud800) that no UTF-8 text can hold.',
  },
  'validate.injection': {
    // 403 as WAFs answer: the request is understood and refused for what it carries; a 400 would ask the caller to "fix" an attack.
    http: 403,
    grpc: GrpcStatus.PERMISSION_DENIED,
    description:
      "A ValidationPolicy rule's injection detection scored the call at or above its threshold: SQL injection, cross-site scripting, path traversal or command injection signatures in the path, query, listed headers or body. The log line has the class, score and signatures; the reply never echoes the payload.",
  },
  'policy.unavailable': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description:
      'The sidecar has no policy snapshot (never received one, none on disk) and policy.onNoPolicy is deny, or the only copy it has is a persisted one it cannot trust (possibly older than the policy last in force), or an enforcing document could not be applied: it admits nothing.',
  },
  'request.cancelled': {
    http: 499,
    grpc: GrpcStatus.CANCELLED,
    description:
      'The caller went away before the response was complete (logged, never sent). Only when the caller left: a call meshgate ended at its own timer is request.timeout or upstream.timeout.',
  },
  'sidecar.overloaded': {
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description:
      'The sidecar sheds the call to stay within its memory bounds: every byte of limits.maxBufferedBodies is held by other calls whose bodies a filter is reading. Retryable; retry-after says when.',
  },
  'filter.error': {
    http: 500,
    grpc: GrpcStatus.INTERNAL,
    description: 'A policy check could not be made; the call fails closed.',
  },
  'filter.denied': {
    http: 403,
    grpc: GrpcStatus.PERMISSION_DENIED,
    description: "A check of your own (a Filter document) denied the call. `rule` names the document and the check's own code (`namespace/name#code`); `reason` is the check's reason.",
  },
  'filter.user_check_failed': {
    // 503 as policy.unavailable: the call was not judged, it was refused because it could not be.
    http: 503,
    grpc: GrpcStatus.UNAVAILABLE,
    description:
      'A check of your own (a Filter document with failureMode: deny, the default) threw, ran past its CPU budget, ran out of memory, returned something that is not a verdict, or could not be compiled on this sidecar. The log line names the document and what went wrong.',
  },
} as const satisfies Record<string, DataPlaneEntry>;

const CA = {
  'ca.token_missing': { grpc: GrpcStatus.UNAUTHENTICATED, description: 'No bearer token and no valid client certificate of this trust domain.' },
  'ca.token_malformed': { grpc: GrpcStatus.UNAUTHENTICATED, description: 'The token is not a compact JWS.' },
  'ca.token_algorithm': { grpc: GrpcStatus.UNAUTHENTICATED, description: "The token's `alg` is not in tokens.algorithms (`none` and HS* never are)." },
  'ca.token_signature': { grpc: GrpcStatus.UNAUTHENTICATED, description: 'The token signature does not verify with any configured key.' },
  'ca.token_expired': { grpc: GrpcStatus.UNAUTHENTICATED, description: "The token's `exp` is past (beyond tokens.clockSkew)." },
  'ca.token_not_yet_valid': { grpc: GrpcStatus.UNAUTHENTICATED, description: "The token's `nbf` or `iat` is in the future (beyond tokens.clockSkew)." },
  'ca.token_issuer': { grpc: GrpcStatus.UNAUTHENTICATED, description: "The token's `iss` is not in tokens.issuers." },
  'ca.token_audience': { grpc: GrpcStatus.UNAUTHENTICATED, description: "The token's `aud` names none of tokens.audiences." },
  'ca.token_claims': { grpc: GrpcStatus.UNAUTHENTICATED, description: 'The token lacks a required claim or names no valid namespace and service account.' },
  'ca.token_keys_unavailable': { grpc: GrpcStatus.UNAVAILABLE, description: 'The JWKS at tokens.jwksUri could not be fetched.' },
  'ca.peer_certificate': { grpc: GrpcStatus.UNAUTHENTICATED, description: 'Renewal refused: the client certificate is expired or not a workload certificate of this trust domain.' },
  'ca.csr_malformed': { grpc: GrpcStatus.INVALID_ARGUMENT, description: 'The CSR is not a PEM PKCS#10 request.' },
  'ca.csr_signature': { grpc: GrpcStatus.INVALID_ARGUMENT, description: "The CSR's signature does not verify with its own public key." },
  'ca.csr_key_type': { grpc: GrpcStatus.INVALID_ARGUMENT, description: "The CSR's key type is not in leaf.keyTypes (EC P-256, RSA of 2048 to 8192 bits)." },
  'ca.rate_limited': { grpc: GrpcStatus.RESOURCE_EXHAUSTED, description: 'The identity exceeded rateLimit.perIdentity.' },
  'ca.internal': { grpc: GrpcStatus.INTERNAL, description: 'Signing or audit failed inside the CA; nothing was issued.' },
} as const satisfies Record<`ca.${string}`, CaEntry>;

const ADMIN = {
  'admin.unauthenticated': { http: 401, description: 'No credentials, or a client certificate or bearer token that does not verify; `reason` says which.' },
  'admin.forbidden': { http: 403, description: 'The caller has no role binding, or its role may not do this (a viewer writing, a developer writing to a production namespace).' },
  'admin.invalid_document': { http: 400, description: 'The document does not validate or does not match the path; `errors` lists file, document, field and reason. Nothing was written.' },
  // Every role's admin listener answers these two (src/admin/admin-server.ts), the policy server's admin API too.
  'admin.not_found': { http: 404, description: 'No such document, or no such admin path.' },
  'admin.method_not_allowed': { http: 405, description: 'The path exists but not with this method; `Allow` lists the methods.' },
  'admin.local_only': {
    http: 403,
    description: '`/config_dump` and `/bans` answer only callers on the same host or pod (loopback), even when the admin listener is bound wider for probes and scraping.',
  },
  'admin.bad_request': { http: 400, description: 'A malformed path segment or query parameter.' },
  'admin.body_too_large': { http: 413, description: 'The request body exceeds `adminApi.maxBodyBytes`.' },
  'admin.read_only': {
    http: 409,
    description: 'With `store: redis`, the document comes from the mounted policy folder (a ConfigMap), which the admin API does not write: change it there. Nothing was written.',
  },
  'admin.store_unavailable': { http: 503, description: 'With `store: redis`, Redis is unreachable (the replica is degraded): writes are refused until it is back. Nothing was written; retry.' },
  'admin.audit_failed': { http: 500, description: 'The change attempt could not be recorded in the audit log; `applied` says whether the change took effect.' },
  'admin.internal': { http: 500, description: 'An unexpected error; details are in the server log.' },
} as const satisfies Record<`admin.${string}`, AdminEntry>;

const SURFACES = { data: DATA, ca: CA, admin: ADMIN } as const;

/** Who answers with a code: the data plane, the CA, or an admin API. */
export type Surface = keyof typeof SURFACES;

/** The name of a reason code: of one surface (`ReasonCode<'data'>` is what a Verdict carries), or of any. */
export type ReasonCode<S extends Surface = Surface> = S extends Surface ? keyof (typeof SURFACES)[S] : never;

/** The statuses a code maps to: HTTP and gRPC on the data plane, gRPC at the CA, HTTP on the admin APIs. */
type EntryOf<C extends ReasonCode> = C extends ReasonCode<'data'> ? DataPlaneEntry : C extends ReasonCode<'ca'> ? CaEntry : AdminEntry;

/** The one table: every surface's codes side by side (the `ca.` and `admin.` prefixes keep the sections apart). */
export const REASON_CODES: { readonly [C in ReasonCode]: EntryOf<C> } = Object.freeze({ ...DATA, ...CA, ...ADMIN });

/** Whether a string from outside (a peer's x-meshgate-reason, a log) is a code of `surface`. */
export function isReasonCode<S extends Surface>(surface: S, code: string): code is ReasonCode<S> {
  return Object.hasOwn(SURFACES[surface], code);
}

/** The codes of one surface, in table order. */
export function codesOf<S extends Surface>(surface: S): ReasonCode<S>[] {
  return Object.keys(SURFACES[surface]) as ReasonCode<S>[];
}

export function reasonCode<C extends ReasonCode>(code: C): EntryOf<C> {
  return REASON_CODES[code];
}
