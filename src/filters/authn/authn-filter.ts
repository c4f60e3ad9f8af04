import { decodeJwt } from 'jose';
import type { CallContext, UpstreamRequestEdits } from '../../core/call-context.ts';
import type { Filter } from '../../core/filter.ts';
import type { Verdict } from '../../core/verdict.ts';
import { CONTINUE, respond } from '../../core/verdict.ts';
import type { IntrospectionRule, JwtRule, RequestAuthenticationDocument } from '../../policy/kinds/request-authentication.ts';
import { isKind } from '../../policy/typed-documents.ts';
import type { PolicyDocument } from '../../policy/types.ts';
import type { FilterKind } from '../filter-kind.ts';
import type { AuthnFailure, AuthnOutcome } from './authn-outcome.ts';
import { authnFailure } from './authn-outcome.ts';
import type { AuthnRuntime } from './authn-runtime.ts';
import type { IntrospectionSettings } from './introspection-client.ts';
import { createIntrospectionVerifier } from './introspection-verifier.ts';
import { createInlineKeySource } from './jwks-keys.ts';
import { createJwtVerifier, MAX_TOKEN_BYTES } from './jwt-verifier.ts';
import { createLruCache } from './lru-cache.ts';
import type { FoundToken, TokenLocation } from './token-locations.ts';
import { createTokenLocations, locationKey } from './token-locations.ts';

/** One JWT rule or the introspection of one document, compiled. */
interface Credential {
  /** `namespace/policy#rule`, in deny replies, logs and shadow counts. */
  readonly id: string;
  readonly policy: string;
  readonly rule: string;
  readonly shadow: boolean;
  /** Keys of the locations this credential is accepted from. */
  readonly locations: ReadonlySet<string>;
  readonly claimsHeader: string | undefined;
  readonly keepToken: boolean;
  verify(token: string): Promise<AuthnOutcome>;
}

interface Policy {
  readonly id: string;
  readonly shadow: boolean;
  readonly denyMissing: boolean;
}

/** RFC 6750 §3: what a 401 tells a bearer-token client. */
const CHALLENGE_MISSING = { 'www-authenticate': 'Bearer' };
const CHALLENGE_INVALID = { 'www-authenticate': 'Bearer error="invalid_token"' };

const PASS: Filter = { name: 'authn', onRequest: () => CONTINUE };

/**
 * Tokens that verified, with their issuer, per filter. A caller sends the same token call after call, and
 * decoding its payload again only to pick the rule (jose's decodeJwt: 2-3 µs in a loop, ~13 µs per call
 * in the every-filter orders sidecar's --cpu-prof) cost more than the verifier's cached verdict after it.
 * Only verified tokens are kept, so a caller cannot fill it with garbage, and the verifiers' caches of
 * the same size already hold the same strings.
 */
const KNOWN_ISSUERS = 1024;

/**
 * Request authentication from the snapshot's RequestAuthentication documents
 * (JWT rules and OAuth2 introspection), compiled once per snapshot; key sets
 * and introspection answers live in the runtime, across snapshots.
 *
 * Per call: find the credential (header, cookie, query); the issuer of a JWT
 * (read from the unverified payload only to pick the rule) selects the rule
 * that verifies everything; an opaque token, or a JWT of an issuer no rule
 * names, goes to introspection when a document configures it. Then:
 * - verified: `annotations.auth` is set (authz `requestPrincipals`, `when`
 *   claims, rate-limit keys); the token is stripped and the claims header set
 *   for the app, as the rule says;
 * - a credential that fails is refused (401; 503 when keys or the
 *   introspection endpoint are unavailable: fail closed), never treated as
 *   anonymous — except under a document in `mode: shadow`, where the failure
 *   is counted and logged and the call goes on as if it carried no credential;
 * - no credential: 401 `authn.missing_token` when an enforcing document says
 *   `onMissingToken: deny` (the default), else the call goes on anonymous and
 *   authz decides.
 * Two different tokens in one request are refused (which one would the app
 * believe?). Headers named by `forwardClaimsHeader` are always removed from
 * what the caller sent, so the app never sees forged claims. Documents are
 * applied in `namespace/name` order; an issuer a later document names again is
 * ignored with a warning.
 */
export function createAuthnFilter(documents: readonly PolicyDocument[], runtime: AuthnRuntime): Filter {
  const docs = documents.filter((d): d is PolicyDocument & RequestAuthenticationDocument => isKind(d, 'RequestAuthentication')).sort((a, b) => policyId(a).localeCompare(policyId(b)));
  const byIssuer = new Map<string, Credential>();
  const knownIssuers = createLruCache<string>(KNOWN_ISSUERS);
  let introspection: Credential | undefined;
  const policies: Policy[] = [];
  const claimsHeaders = new Set<string>();
  const allLocations: TokenLocation[] = [];
  const uris = new Set<string>();
  const introspections: IntrospectionSettings[] = [];

  for (const doc of docs) {
    const policy = policyId(doc);
    const shadow = doc.spec.mode === 'shadow';
    policies.push({ id: policy, shadow, denyMissing: doc.spec.onMissingToken === 'deny' });
    for (const rule of doc.spec.jwtRules) {
      if (rule.forwardClaimsHeader) claimsHeaders.add(rule.forwardClaimsHeader);
      const taken = byIssuer.get(rule.issuer);
      if (taken) {
        runtime.logger?.warn({ component: 'authn', issuer: rule.issuer, used: taken.id, ignored: `${policy}#${rule.name}` }, 'two RequestAuthentication documents name one issuer: the first applies');
        continue;
      }
      if (rule.jwksUri) uris.add(rule.jwksUri);
      const keys = rule.jwksUri ? runtime.jwks(rule.jwksUri) : createInlineKeySource(rule.jwks);
      const verifier = createJwtVerifier({ issuer: rule.issuer, audiences: rule.audiences, algorithms: rule.algorithms, clockSkewMs: rule.clockSkew }, keys, runtime.clock);
      byIssuer.set(rule.issuer, credential(policy, shadow, rule, allLocations, verifier.verify));
    }
    const spec = doc.spec.introspection;
    if (spec) {
      if (spec.forwardClaimsHeader) claimsHeaders.add(spec.forwardClaimsHeader);
      if (introspection) {
        runtime.logger?.warn({ component: 'authn', used: introspection.id, ignored: `${policy}#${spec.name}` }, 'two RequestAuthentication documents configure introspection: the first applies');
        continue;
      }
      const settings = introspectionSettings(spec);
      introspections.push(settings);
      const verifier = createIntrospectionVerifier(
        { issuer: spec.issuer, audiences: spec.audiences, clockSkewMs: spec.clockSkew, endpoint: spec.endpoint },
        runtime.introspection(settings),
        runtime.clock,
      );
      introspection = credential(policy, shadow, spec, allLocations, verifier.verify);
    }
  }
  runtime.retain(uris, introspections);
  if (docs.length === 0) return PASS;

  const locations = createTokenLocations(allLocations);
  const removeAlways = [...claimsHeaders];
  const enforcing = policies.find((p) => !p.shadow);
  const denyMissing = policies.find((p) => !p.shadow && p.denyMissing);
  const shadowDenyMissing = policies.filter((p) => p.shadow && p.denyMissing);

  const shadowDenial = (call: CallContext, policy: string, rule: string, failure: AuthnFailure): void => {
    (call.annotations.shadowDenials ??= []).push(`${policy}#${rule}`);
    try {
      runtime.onShadowDenial?.(policy, rule);
      runtime.logger?.info({ component: 'authn', policy, rule, code: failure.code, reason: failure.reason, request_id: call.id }, 'shadow mode: authentication would deny this call');
    } catch {
      // Telemetry never breaks traffic (STYLE.md #8).
    }
  };

  /**
   * The call has no credential an enforcing document accepted. `afterShadowFailure`:
   * a shadow document already counted this call; its missing-token rule would double it.
   */
  const noCredential = (call: CallContext, afterShadowFailure = false): Verdict => {
    if (!afterShadowFailure) for (const p of shadowDenyMissing) shadowDenial(call, p.id, 'missing-token', authnFailure('authn.missing_token', 'no token'));
    if (!denyMissing) return CONTINUE;
    return respond('authn.missing_token', 'a token is required and none was accepted', { rule: `${denyMissing.id}#missing-token`, headers: CHALLENGE_MISSING });
  };

  /** A failure no single rule owns (unknown issuer, two tokens, not a token at all): every document refuses it. */
  const refuseUnowned = (call: CallContext, failure: AuthnFailure, label: string): Verdict => {
    if (!enforcing) {
      for (const p of policies) shadowDenial(call, p.id, label, failure);
      return noCredential(call, true);
    }
    return respond(failure.code, failure.reason, { rule: `${enforcing.id}#${label}`, headers: CHALLENGE_INVALID });
  };

  const refuse = (call: CallContext, owner: Credential, failure: AuthnFailure): Verdict => {
    if (owner.shadow) {
      shadowDenial(call, owner.policy, owner.rule, failure);
      return noCredential(call, true);
    }
    const unavailable = failure.code === 'authn.jwks_unavailable' || failure.code === 'authn.introspection_unavailable';
    return respond(failure.code, failure.reason, { rule: owner.id, ...(unavailable ? {} : { headers: CHALLENGE_INVALID }) });
  };

  const verified = (call: CallContext, owner: Credential, found: readonly FoundToken[], outcome: AuthnOutcome): Verdict => {
    if (!outcome.ok) return refuse(call, owner, outcome);
    call.annotations.auth = outcome.auth;
    // Shadow mode changes nothing the app sees; the credential is verified all the same.
    if (owner.shadow) return CONTINUE;
    if (owner.claimsHeader) editsOf(call).setHeaders[owner.claimsHeader] = outcome.claimsHeader;
    if (!owner.keepToken) locations.strip(call, found, editsOf(call));
    return CONTINUE;
  };

  return {
    name: 'authn',
    onRequest(call) {
      if (removeAlways.length > 0) editsOf(call).removeHeaders.push(...removeAlways);
      const found = locations.find(call);
      if (found.length === 0) return noCredential(call);
      const token = found[0]!.token;
      if (found.some((f) => f.token !== token)) return refuseUnowned(call, authnFailure('authn.jwt_invalid', 'more than one token in the request'), 'ambiguous-token');
      if (token.length > MAX_TOKEN_BYTES) return refuseUnowned(call, authnFailure('authn.jwt_invalid', `token longer than ${MAX_TOKEN_BYTES} bytes`), 'malformed-token');
      const issuer = knownIssuers.get(token) ?? unverifiedIssuer(token);
      const rule = issuer === undefined ? undefined : byIssuer.get(issuer);
      const from = (c: Credential): boolean => found.some((f) => c.locations.has(f.location));
      let owner: Credential | undefined;
      if (rule) {
        if (!from(rule)) return refuse(call, rule, authnFailure('authn.jwt_issuer', 'token of this issuer is not accepted where it was sent'));
        owner = rule;
      } else if (introspection && from(introspection)) {
        owner = introspection;
      } else {
        return issuer === undefined
          ? refuseUnowned(call, authnFailure('authn.jwt_invalid', 'token is not a JWT with an issuer'), 'malformed-token')
          : refuseUnowned(call, authnFailure('authn.jwt_issuer', 'token issuer not accepted'), 'unknown-issuer');
      }
      const chosen = owner;
      return chosen.verify(token).then((outcome) => {
        if (outcome.ok && issuer !== undefined) knownIssuers.set(token, issuer);
        return verified(call, chosen, found, outcome);
      });
    },
  };
}

/** Request authentication: after ip-access, before authz (which matches requestPrincipals). */
export const authnKind: FilterKind<AuthnRuntime> = { name: 'authn', compile: createAuthnFilter };

function policyId(doc: PolicyDocument): string {
  return `${doc.metadata.namespace}/${doc.metadata.name}`;
}

function credential(policy: string, shadow: boolean, rule: JwtRule | IntrospectionRule, all: TokenLocation[], verify: (token: string) => Promise<AuthnOutcome>): Credential {
  const locations: TokenLocation[] = [
    ...(rule.fromHeaders ?? []).map((h) => ({ kind: 'header' as const, name: h.name, prefix: h.prefix })),
    ...(rule.fromCookies ?? []).map((name) => ({ kind: 'cookie' as const, name })),
    ...(rule.fromParams ?? []).map((name) => ({ kind: 'param' as const, name })),
  ];
  all.push(...locations);
  return {
    id: `${policy}#${rule.name}`,
    policy,
    rule: rule.name,
    shadow,
    locations: new Set(locations.map(locationKey)),
    claimsHeader: rule.forwardClaimsHeader,
    keepToken: rule.forwardOriginalToken,
    verify,
  };
}

function introspectionSettings(spec: IntrospectionRule): IntrospectionSettings {
  return {
    endpoint: spec.endpoint,
    clientId: spec.clientId,
    clientSecretFile: spec.clientSecretFile,
    cacheTtlMs: spec.cacheTtl,
    cacheSize: spec.cacheSize,
    timeoutMs: spec.timeout,
  };
}

/** `iss` of a JWT-shaped token, unverified: only to pick the rule that verifies everything. */
function unverifiedIssuer(token: string): string | undefined {
  try {
    const iss = decodeJwt(token).iss;
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}

function editsOf(call: CallContext): UpstreamRequestEdits {
  return (call.annotations.upstreamEdits ??= { removeHeaders: [], setHeaders: {} });
}
