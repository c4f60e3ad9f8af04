import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import type { RouteConfig } from '../../../src/config/sidecar-schema.ts';
import { sidecarConfigSchema } from '../../../src/config/sidecar-schema.ts';
import type { PolicyRoute } from '../../../src/policy/kinds/route.ts';
import { routeSchema } from '../../../src/policy/kinds/route.ts';
import { DEFAULT_POLICY_LIMITS } from '../../../src/policy/limits.ts';
import type { TypedPolicyDocument } from '../../../src/policy/typed-documents.ts';
import { isKind } from '../../../src/policy/typed-documents.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';
import { createPolicyValidator } from '../../../src/policy/validate.ts';
import { doc, errorLines, validDocument } from './helpers.ts';

// Compile-time checks: a policy Route compiles with the sidecar's router, and
// every typed document is a PolicyDocument.
type Fits<T, U extends T> = U;
type _RouteFitsRouter = Fits<RouteConfig, PolicyRoute>;
type _TypedIsPolicyDocument = Fits<PolicyDocument, TypedPolicyDocument>;

const ecPublicJwk = () => ({ ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }), kid: 'k1' });
const ecPrivateJwk = () => ({ ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }), kid: 'k1' });

const KEY = (kind: string) => `p.yaml: document 0 (${kind}/shop/p1)`;

/** [case, kind, spec YAML, the one expected error line]. */
type Case = readonly [string, string, string, string];

const AUTHZ = 'AuthorizationPolicy';
const AUTHN = 'RequestAuthentication';
const RATE = 'RateLimitPolicy';
const IP = 'IPAccessPolicy';
const VALIDATION = 'ValidationPolicy';
const ROUTE = 'Route';

const INVALID: readonly Case[] = [
  // AuthorizationPolicy
  ['an unknown action', AUTHZ, 'action: PERMIT', `${KEY(AUTHZ)}: spec.action: expected one of ALLOW, DENY, AUDIT, got "PERMIT"`],
  ['an unknown mode', AUTHZ, 'mode: dry-run', `${KEY(AUTHZ)}: spec.mode: expected one of enforce, shadow, got "dry-run"`],
  ['a misspelt rule field', AUTHZ, 'rules: [{ form: [] }]', `${KEY(AUTHZ)}: spec.rules[0].form: unknown field`],
  [
    'a wildcard in the middle',
    AUTHZ,
    'rules: [{ from: [{ principals: ["spiffe://*/ns/*"] }] }]',
    `${KEY(AUTHZ)}: spec.rules[0].from[0].principals[0]: expected an exact value, "*", or one "*" at the start or end, got "spiffe://*/ns/*"`,
  ],
  [
    'a CIDR with a bad prefix',
    AUTHZ,
    'rules: [{ from: [{ ipBlocks: [10.0.0.0/33] }] }]',
    `${KEY(AUTHZ)}: spec.rules[0].from[0].ipBlocks[0]: expected an IPv4 or IPv6 CIDR like 10.0.0.0/8 or 2001:db8::/32 (or one address), got "10.0.0.0/33"`,
  ],
  [
    'an IPv6 zone in a CIDR',
    AUTHZ,
    'rules: [{ from: [{ notIpBlocks: ["fe80::1%eth0"] }] }]',
    `${KEY(AUTHZ)}: spec.rules[0].from[0].notIpBlocks[0]: expected an IPv4 or IPv6 CIDR like 10.0.0.0/8 or 2001:db8::/32 (or one address), got "fe80::1%eth0"`,
  ],
  ['a relative path', AUTHZ, 'rules: [{ to: [{ paths: [orders] }] }]', `${KEY(AUTHZ)}: spec.rules[0].to[0].paths[0]: expected a path starting with "/" (or "*"), got "orders"`],
  [
    'a dot-dot path',
    AUTHZ,
    'rules: [{ to: [{ notPaths: [/public/../admin] }] }]',
    `${KEY(AUTHZ)}: spec.rules[0].to[0].notPaths[0]: never matches a normalized path: "." and ".." segments are resolved before matching`,
  ],
  ['a path with a query', AUTHZ, 'rules: [{ to: [{ paths: ["/a?b=1"] }] }]', `${KEY(AUTHZ)}: spec.rules[0].to[0].paths[0]: paths match without the query: no "?", "#" or spaces`],
  ['a bad method', AUTHZ, 'rules: [{ to: [{ methods: ["GET /"] }] }]', `${KEY(AUTHZ)}: spec.rules[0].to[0].methods[0]: expected an HTTP method like GET or POST, got "GET /"`],
  ['port 0', AUTHZ, 'rules: [{ to: [{ ports: [0] }] }]', `${KEY(AUTHZ)}: spec.rules[0].to[0].ports[0]: must be at least 1, got 0`],
  ['an empty gRPC match', AUTHZ, 'rules: [{ to: [{ grpc: {} }] }]', `${KEY(AUTHZ)}: spec.rules[0].to[0].grpc: expected service, method or both`],
  [
    'an empty source',
    AUTHZ,
    'rules: [{ from: [{}] }]',
    `${KEY(AUTHZ)}: spec.rules[0].from[0]: expected at least one of principals, notPrincipals, namespaces, notNamespaces, ipBlocks, notIpBlocks, requestPrincipals, notRequestPrincipals (omit "from" to match any source)`,
  ],
  ['an empty from list', AUTHZ, 'rules: [{ from: [] }]', `${KEY(AUTHZ)}: spec.rules[0].from: must not be empty`],
  [
    'an unknown condition key',
    AUTHZ,
    'rules: [{ when: [{ key: request.body, values: [x] }] }]',
    `${KEY(AUTHZ)}: spec.rules[0].when[0].key: expected request.auth.claims[NAME], request.headers[NAME], source.ip, source.namespace or source.principal, got "request.body"`,
  ],
  ['a condition without values', AUTHZ, 'rules: [{ when: [{ key: "request.headers[x-tenant]" }] }]', `${KEY(AUTHZ)}: spec.rules[0].when[0]: expected values, notValues or both`],
  [
    'a source.ip condition with a non-CIDR',
    AUTHZ,
    'rules: [{ when: [{ key: source.ip, values: [office] }] }]',
    `${KEY(AUTHZ)}: spec.rules[0].when[0].values[0]: expected an IPv4 or IPv6 CIDR (the key is source.ip), got "office"`,
  ],
  ['two rules with one name', AUTHZ, 'rules: [{ name: a }, { name: a }]', `${KEY(AUTHZ)}: spec.rules[1].name: rule name "a" is already used by rules[0]`],
  [
    'a selector with a bad service',
    AUTHZ,
    'selector: { services: [Orders] }',
    `${KEY(AUTHZ)}: spec.selector.services[0]: expected a DNS label (lower-case letters, digits and "-", at most 63 characters), got "Orders"`,
  ],
  // RequestAuthentication
  [
    'alg none',
    AUTHN,
    'jwtRules: [{ name: a, issuer: https://a, jwksUri: https://a/jwks, algorithms: [none] }]',
    `${KEY(AUTHN)}: spec.jwtRules[0].algorithms[0]: "none" is never accepted: tokens must be signed`,
  ],
  [
    'HS256',
    AUTHN,
    'jwtRules: [{ name: a, issuer: https://a, jwksUri: https://a/jwks, algorithms: [HS256] }]',
    `${KEY(AUTHN)}: spec.jwtRules[0].algorithms[0]: HS256 is not accepted: symmetric algorithms invite key-type confusion; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA`,
  ],
  ['no key source', AUTHN, 'jwtRules: [{ name: a, issuer: https://a }]', `${KEY(AUTHN)}: spec.jwtRules[0]: expected exactly one of jwksUri, jwks`],
  [
    'a plain-http JWKS',
    AUTHN,
    'jwtRules: [{ name: a, issuer: https://a, jwksUri: "http://idp.example/jwks" }]',
    `${KEY(AUTHN)}: spec.jwtRules[0].jwksUri: expected an https URL (plain http only for localhost), got "http://idp.example/jwks"`,
  ],
  [
    'a symmetric inline key',
    AUTHN,
    'jwtRules: [{ name: a, issuer: https://a, jwks: { keys: [{ kty: oct, k: c2VjcmV0 }] } }]',
    `${KEY(AUTHN)}: spec.jwtRules[0].jwks.keys[0].kty: symmetric keys (kty oct) are not accepted: JWT rules verify with public keys only`,
  ],
  [
    'a private inline key',
    AUTHN,
    `jwtRules: [{ name: a, issuer: https://a, jwks: { keys: [${JSON.stringify(ecPrivateJwk())}] } }]`,
    `${KEY(AUTHN)}: spec.jwtRules[0].jwks.keys[0].d: private key material: inline JWKS must hold public keys only`,
  ],
  [
    'keys that fit no algorithm',
    AUTHN,
    `jwtRules: [{ name: a, issuer: https://a, algorithms: [RS256], jwks: { keys: [${JSON.stringify(ecPublicJwk())}] } }]`,
    `${KEY(AUTHN)}: spec.jwtRules[0].jwks.keys: no key fits algorithms RS256`,
  ],
  [
    'a broken inline key',
    AUTHN,
    'jwtRules: [{ name: a, issuer: https://a, jwks: { keys: [{ kty: EC, crv: P-256, x: AAAA, y: AAAA }] } }]',
    `${KEY(AUTHN)}: spec.jwtRules[0].jwks.keys[0]: not a usable public key (Invalid JWK EC key)`,
  ],
  ['a clock skew over 5m', AUTHN, 'jwtRules: [{ name: a, issuer: https://a, jwksUri: https://a/jwks, clockSkew: 10m }]', `${KEY(AUTHN)}: spec.jwtRules[0].clockSkew: must be at most 5m`],
  [
    'a clock skew that is not a duration',
    AUTHN,
    'jwtRules: [{ name: a, issuer: https://a, jwksUri: https://a/jwks, clockSkew: "30 s" }]',
    `${KEY(AUTHN)}: spec.jwtRules[0].clockSkew: expected a duration like 250ms, 5s, 2m or 1h (or milliseconds as an integer), got "30 s"`,
  ],
  [
    'one issuer twice',
    AUTHN,
    'jwtRules: [{ name: a, issuer: https://a, jwksUri: https://a/jwks }, { name: b, issuer: https://a, jwksUri: https://a/jwks }]',
    `${KEY(AUTHN)}: spec.jwtRules[1].issuer: issuer "https://a" is already used by jwtRules[0]`,
  ],
  ['no JWT rules', AUTHN, 'jwtRules: []', `${KEY(AUTHN)}: spec.jwtRules: must not be empty (or give introspection)`],
  ['neither JWT rules nor introspection', AUTHN, 'onMissingToken: deny', `${KEY(AUTHN)}: spec.jwtRules: must not be empty (or give introspection)`],
  [
    'a plain-http introspection endpoint',
    AUTHN,
    'introspection: { endpoint: "http://idp.example/introspect", clientId: c, clientSecretFile: s }',
    `${KEY(AUTHN)}: spec.introspection.endpoint: expected an https URL (plain http only for localhost), got "http://idp.example/introspect"`,
  ],
  [
    'a client secret path instead of a file name',
    AUTHN,
    'introspection: { endpoint: "https://idp.example/introspect", clientId: c, clientSecretFile: /var/run/secrets/kubernetes.io/serviceaccount/token }',
    `${KEY(AUTHN)}: spec.introspection.clientSecretFile: expected a file name in the sidecar secrets folder (letters, digits, ".", "_", "-"; no "/"), got "/var/run/secrets/kubernetes.io/serviceaccount/token"`,
  ],
  [
    'a client secret file that climbs',
    AUTHN,
    'introspection: { endpoint: "https://idp.example/introspect", clientId: c, clientSecretFile: "..secret" }',
    `${KEY(AUTHN)}: spec.introspection.clientSecretFile: expected a file name in the sidecar secrets folder (letters, digits, ".", "_", "-"; no "/"), got "..secret"`,
  ],
  [
    'an introspection cache TTL over 1h',
    AUTHN,
    'introspection: { endpoint: "https://idp.example/introspect", clientId: c, clientSecretFile: s, cacheTtl: 2h }',
    `${KEY(AUTHN)}: spec.introspection.cacheTtl: must be at most 1h`,
  ],
  [
    'an introspection cache of zero entries',
    AUTHN,
    'introspection: { endpoint: "https://idp.example/introspect", clientId: c, clientSecretFile: s, cacheSize: 0 }',
    `${KEY(AUTHN)}: spec.introspection.cacheSize: must be at least 1, got 0`,
  ],
  [
    'introspection named like a JWT rule',
    AUTHN,
    'jwtRules: [{ name: idp, issuer: https://a, jwksUri: https://a/jwks }]\nintrospection: { name: idp, endpoint: "https://idp.example/introspect", clientId: c, clientSecretFile: s }',
    `${KEY(AUTHN)}: spec.introspection.name: rule name "idp" is already used by a JWT rule`,
  ],
  [
    'an unknown onMissingToken',
    AUTHN,
    'jwtRules: [{ name: a, issuer: https://a, jwksUri: https://a/jwks }]\nonMissingToken: allow',
    `${KEY(AUTHN)}: spec.onMissingToken: expected one of deny, allow-anonymous, got "allow"`,
  ],
  // RateLimitPolicy
  [
    'an unknown key',
    RATE,
    'rules: [{ name: a, key: [source.port], limit: { requests: 1, per: 1s } }]',
    `${KEY(RATE)}: spec.rules[0].key[0]: expected source.principal, source.ip, header:NAME or claim:NAME, got "source.port"`,
  ],
  ['zero requests', RATE, 'rules: [{ name: a, key: [source.ip], limit: { requests: 0, per: 1s } }]', `${KEY(RATE)}: spec.rules[0].limit.requests: must be at least 1, got 0`],
  ['a zero period', RATE, 'rules: [{ name: a, key: [source.ip], limit: { requests: 1, per: 0s } }]', `${KEY(RATE)}: spec.rules[0].limit.per: must be longer than 0`],
  [
    'an unknown scope',
    RATE,
    'rules: [{ name: a, key: [source.ip], limit: { requests: 1, per: 1s }, scope: cluster }]',
    `${KEY(RATE)}: spec.rules[0].scope: expected one of local, global, got "cluster"`,
  ],
  ['a rule without key', RATE, 'rules: [{ name: a, limit: { requests: 1, per: 1s } }]', `${KEY(RATE)}: spec.rules[0].key: required with limit: what each bucket is per`],
  ['a rule without name', RATE, 'rules: [{ key: [source.ip], limit: { requests: 1, per: 1s } }]', `${KEY(RATE)}: spec.rules[0].name: missing required field (expected string)`],
  [
    'a local fallback without failureMode local',
    RATE,
    'rules: [{ name: a, key: [source.ip], limit: { requests: 1, per: 1s }, scope: global, localFallback: split }]',
    `${KEY(RATE)}: spec.rules[0].localFallback: only applies to failureMode: local`,
  ],
  [
    'an unknown responseHeaders',
    RATE,
    'rules: [{ name: a, key: [source.ip], limit: { requests: 1, per: 1s }, responseHeaders: always }]',
    `${KEY(RATE)}: spec.rules[0].responseHeaders: expected one of all, refusals, none, got "always"`,
  ],
  // IPAccessPolicy
  ['a deny entry that is no address', IP, 'deny: [not-an-ip]', `${KEY(IP)}: spec.deny[0]: expected an IPv4 or IPv6 CIDR like 10.0.0.0/8 or 2001:db8::/32 (or one address), got "not-an-ip"`],
  ['an empty spec', IP, '{}', `${KEY(IP)}: spec: expected at least one of allow, deny, autoBan`],
  ['a zero-sized ban list', IP, 'autoBan: { threshold: 5, maxEntries: 0 }', `${KEY(IP)}: spec.autoBan.maxEntries: must be at least 1, got 0`],
  ['a mode (IP access has none)', IP, 'deny: [10.0.0.0/8]\nmode: shadow', `${KEY(IP)}: spec.mode: unknown field`],
  // ValidationPolicy
  [
    'a rule with no check',
    VALIDATION,
    'rules: [{ name: a }]',
    `${KEY(VALIDATION)}: spec.rules[0]: expected at least one check: maxBodyBytes, contentTypes, requiredHeaders, maxHeaderBytes, jsonSchema, json, injection`,
  ],
  [
    'a bad media type',
    VALIDATION,
    'rules: [{ name: a, contentTypes: [json] }]',
    `${KEY(VALIDATION)}: spec.rules[0].contentTypes[0]: expected a media type like application/json or text/*, got "json"`,
  ],
  ['a bad size', VALIDATION, 'rules: [{ name: a, maxBodyBytes: 10MB }]', `${KEY(VALIDATION)}: spec.rules[0].maxBodyBytes: expected a size like 65536, 64KiB or 10MiB, got "10MB"`],
  [
    'a remote $ref',
    VALIDATION,
    'rules: [{ name: a, jsonSchema: { properties: { a: { $ref: "https://evil.example/s.json" } } } }]',
    `${KEY(VALIDATION)}: spec.rules[0].jsonSchema.properties.a.$ref: only local references ("#/...") are allowed: nothing is fetched`,
  ],
  [
    'a catastrophic pattern',
    VALIDATION,
    'rules: [{ name: a, jsonSchema: { properties: { id: { type: string, pattern: "(a+)+$" } } } }]',
    `${KEY(VALIDATION)}: spec.rules[0].jsonSchema.properties.id.pattern: regex can backtrack catastrophically (ambiguous repetition such as (a+)+ or (a|a)*); rewrite it so each character can match only one way`,
  ],
  [
    'a catastrophic patternProperties key',
    VALIDATION,
    'rules: [{ name: a, jsonSchema: { patternProperties: { "(x+x+)+y": {} } } }]',
    `${KEY(VALIDATION)}: spec.rules[0].jsonSchema.patternProperties["(x+x+)+y"]: regex can backtrack catastrophically (ambiguous repetition such as (a+)+ or (a|a)*); rewrite it so each character can match only one way`,
  ],
  [
    'an invalid unicode pattern',
    VALIDATION,
    'rules: [{ name: a, jsonSchema: { pattern: "[z-a]" } }]',
    `${KEY(VALIDATION)}: spec.rules[0].jsonSchema.pattern: not a valid regular expression (/[z-a]/u: Range out of order in character class)`,
  ],
  // Route
  ['a bad destination', ROUTE, 'service: Orders', `${KEY(ROUTE)}: spec.service: expected a service as name or name.namespace (DNS labels), got "Orders"`],
  [
    'a catastrophic path regex',
    ROUTE,
    'service: orders\nroutes: [{ match: { path: { regex: "(a+)+$" } } }]',
    `${KEY(ROUTE)}: spec.routes[0].match.path.regex: regex can backtrack catastrophically (ambiguous repetition such as (a+)+ or (a|a)*); rewrite it so each character can match only one way`,
  ],
  [
    'a regex that escapes its anchors',
    ROUTE,
    'service: orders\nroutes: [{ match: { headers: [{ name: x-v, regex: "a)|(b" }] } }]',
    `${KEY(ROUTE)}: spec.routes[0].match.headers[0].regex: not a valid regular expression (/a)|(b/: Unmatched ')')`,
  ],
  ['two path matchers', ROUTE, 'service: orders\nroutes: [{ match: { path: { exact: /a, prefix: /b } } }]', `${KEY(ROUTE)}: spec.routes[0].match.path: expected exactly one of exact, prefix, regex`],
  [
    'a timeout that is not a duration',
    ROUTE,
    'service: orders\nroutes: [{ timeout: fast }]',
    `${KEY(ROUTE)}: spec.routes[0].timeout: expected a duration like 250ms, 5s, 2m or 1h (or milliseconds as an integer), got "fast"`,
  ],
  ['eleven retries', ROUTE, 'service: orders\nroutes: [{ retries: { attempts: 11 } }]', `${KEY(ROUTE)}: spec.routes[0].retries.attempts: must be at most 10, got 11`],
  [
    'a sunset that is no date',
    ROUTE,
    'service: orders\nversions: [{ name: v1, subset: { version: v1 }, deprecated: { sunset: 2026-02-30, message: bye } }]',
    `${KEY(ROUTE)}: spec.versions[0].deprecated.sunset: expected a calendar date like 2026-06-30 or 2026-06-30T00:00:00Z, got "2026-02-30"`,
  ],
  [
    'a deprecation since after its sunset',
    ROUTE,
    'service: orders\nversions: [{ name: v1, subset: { version: v1 }, deprecated: { sunset: 2026-06-30, since: 2026-07-01, message: bye } }]',
    `${KEY(ROUTE)}: spec.versions[0].deprecated.since: since must not be later than sunset (RFC 9745: a resource is deprecated before it goes away)`,
  ],
  [
    'a since that is no date',
    ROUTE,
    'service: orders\nversions: [{ name: v1, subset: { version: v1 }, deprecated: { sunset: 2026-06-30, since: soon, message: bye } }]',
    `${KEY(ROUTE)}: spec.versions[0].deprecated.since: expected an ISO 8601 date like 2026-06-30 or 2026-06-30T00:00:00Z, got "soon"`,
  ],
  [
    'one version twice',
    ROUTE,
    'service: orders\nversions: [{ name: v1, subset: { version: v1 } }, { name: v1, subset: { version: v2 } }]',
    `${KEY(ROUTE)}: spec.versions[1].name: version name "v1" is already used by versions[0]`,
  ],
  ['an empty subset', ROUTE, 'service: orders\nversions: [{ name: v1, subset: {} }]', `${KEY(ROUTE)}: spec.versions[0].subset: expected at least one label`],
  [
    'a brown-out that ends before it starts',
    ROUTE,
    'service: orders\nversions: [{ name: v1, subset: { version: v1 }, brownouts: [{ start: "2026-05-05T10:00:00Z", end: "2026-05-05T10:00:00Z" }] }]',
    `${KEY(ROUTE)}: spec.versions[0].brownouts[0].end: end must be later than start`,
  ],
  [
    'a brown-out that is no date',
    ROUTE,
    'service: orders\nversions: [{ name: v1, subset: { version: v1 }, brownouts: [{ start: tuesday, end: 2026-05-06 }] }]',
    `${KEY(ROUTE)}: spec.versions[0].brownouts[0].start: expected an ISO 8601 date like 2026-06-30 or 2026-06-30T00:00:00Z, got "tuesday"`,
  ],
  [
    'thirty-three brown-outs',
    ROUTE,
    `service: orders\nversions: [{ name: v1, subset: { version: v1 }, brownouts: [${Array.from({ length: 33 }, (_, i) => `{ start: 2026-01-${String((i % 28) + 1).padStart(2, '0')}, end: 2026-03-01 }`).join(', ')}] }]`,
    `${KEY(ROUTE)}: spec.versions[0].brownouts: too many entries: at most 32 (got 33)`,
  ],
  [
    'a successor that is not a version of the Route',
    ROUTE,
    'service: orders\nversions: [{ name: v1, subset: { version: v1 }, retired: true, successor: { version: v3 } }, { name: v2, subset: { version: v2 } }]',
    `${KEY(ROUTE)}: spec.versions[0].successor.version: no version named v3 in this Route`,
  ],
  [
    'a version its own successor',
    ROUTE,
    'service: orders\nversions: [{ name: v1, subset: { version: v1 }, retired: true, successor: { version: v1 } }]',
    `${KEY(ROUTE)}: spec.versions[0].successor.version: a version cannot be its own successor`,
  ],
  [
    'a successor link that would break its header',
    ROUTE,
    'service: orders\nversions: [{ name: v1, subset: { version: v1 }, retired: true, successor: { link: "https://docs.example/v2>; rel=x" } }]',
    `${KEY(ROUTE)}: spec.versions[0].successor.link: expected an absolute http or https URL of visible ASCII (percent-encode the rest), got "https://docs.example/v2>; rel=x"`,
  ],
  [
    'an empty successor',
    ROUTE,
    'service: orders\nversions: [{ name: v1, subset: { version: v1 }, retired: true, successor: {} }]',
    `${KEY(ROUTE)}: spec.versions[0].successor: expected version, link or both`,
  ],
];

describe('policy kinds: invalid fields', () => {
  it.each(INVALID)('%s (%s)', (_name, kind, spec, expected) => {
    expect(errorLines(doc(kind, spec))).toEqual([expected]);
  });
});

describe('policy kinds: the envelope', () => {
  it.each([
    ['a wrong apiVersion', doc(AUTHZ, '{}').replace('meshgate.dev/v1', 'meshgate.dev/v2'), `${KEY(AUTHZ)}: apiVersion: expected meshgate.dev/v1, got "meshgate.dev/v2"`],
    [
      'an unknown kind',
      doc('Gateway', '{}'),
      'p.yaml: document 0 (Gateway/shop/p1): kind: expected one of AuthorizationPolicy, RequestAuthentication, RateLimitPolicy, IPAccessPolicy, ValidationPolicy, Route, Filter, got "Gateway"',
    ],
    [
      'a name that is no DNS label',
      doc(AUTHZ, '{}', '{ name: Bad_Name, namespace: shop }'),
      'p.yaml: document 0 (AuthorizationPolicy/shop/Bad_Name): metadata.name: expected a DNS label (lower-case letters, digits and "-", at most 63 characters), got "Bad_Name"',
    ],
    ['no namespace', doc(AUTHZ, '{}', '{ name: p1 }'), 'p.yaml: document 0: metadata.namespace: missing required field (expected string)'],
    ['no spec', 'apiVersion: meshgate.dev/v1\nkind: Route\nmetadata: { name: p1, namespace: shop }\n', `${KEY(ROUTE)}: spec: missing required field (expected object)`],
    ['an unknown top-level field', `${doc(AUTHZ, '{}')}status: {}\n`, `${KEY(AUTHZ)}: status: unknown field`],
    ['a list instead of a document', '- a\n- b\n', 'p.yaml: document 0: (top level): expected a mapping with apiVersion, kind, metadata and spec, got a list'],
  ])('refuses %s', (_name, text, expected) => {
    expect(errorLines(text)).toEqual([expected]);
  });

  it('reports every bad field of a document, one line each', () => {
    expect(errorLines(doc(AUTHZ, 'action: PERMIT\nmode: later\nextra: 1'))).toEqual([
      `${KEY(AUTHZ)}: spec.action: expected one of ALLOW, DENY, AUDIT, got "PERMIT"`,
      `${KEY(AUTHZ)}: spec.mode: expected one of enforce, shadow, got "later"`,
      `${KEY(AUTHZ)}: spec.extra: unknown field`,
    ]);
  });
});

describe('policy kinds: valid documents', () => {
  it('AuthorizationPolicy: defaults, upper-cased methods, lower-cased hosts', () => {
    const d = validDocument(doc(AUTHZ, '{}'));
    expect(d.spec).toEqual({ selector: {}, action: 'ALLOW', mode: 'enforce', rules: [] });
    const full = validDocument(
      doc(
        AUTHZ,
        `selector: { services: [orders] }
action: DENY
mode: shadow
rules:
  - name: r1
    from: [{ principals: ["spiffe://cluster.local/ns/shop/*"], notIpBlocks: [10.0.0.0/8, "2001:db8::/32", 192.168.1.7], requestPrincipals: ["https://idp.example/*"] }]
    to: [{ methods: [get, POST], paths: [/orders, "/orders/*", "/orders/*/items", "*"], hosts: ["*.Example.com"], ports: [8080], grpc: { service: shop.v1.Orders, method: GetOrder } }]
    when: [{ key: "request.headers[x-tenant]", values: [acme] }, { key: source.ip, notValues: [192.168.0.0/16] }, { key: "request.auth.claims[groups][0]", values: ["admin*"] }]`,
      ),
    );
    if (!isKind(full, 'AuthorizationPolicy')) throw new Error('kind');
    expect(full.spec.action).toBe('DENY');
    expect(full.spec.rules[0]!.to![0]!.methods).toEqual(['GET', 'POST']);
    expect(full.spec.rules[0]!.to![0]!.hosts).toEqual(['*.example.com']);
  });

  it('RequestAuthentication: safe algorithms, 30s skew, the bearer header, deny without token', () => {
    const d = validDocument(doc(AUTHN, 'jwtRules: [{ name: idp, issuer: "https://idp.example", jwksUri: "https://idp.example/jwks" }]'));
    if (!isKind(d, 'RequestAuthentication')) throw new Error('kind');
    expect(d.spec.onMissingToken).toBe('deny');
    expect(d.spec.mode).toBe('enforce');
    expect(d.spec.jwtRules[0]).toEqual({
      name: 'idp',
      issuer: 'https://idp.example',
      jwksUri: 'https://idp.example/jwks',
      algorithms: ['RS256', 'ES256'],
      clockSkew: 30_000,
      fromHeaders: [{ name: 'authorization', prefix: 'Bearer ' }],
      forwardOriginalToken: false,
    });
    const inline = validDocument(
      doc(AUTHN, `jwtRules: [{ name: a, issuer: i, algorithms: [ES256], jwks: { keys: [${JSON.stringify(ecPublicJwk())}] }, fromCookies: [session], clockSkew: 5s }]\nonMissingToken: allow-anonymous`),
    );
    if (!isKind(inline, 'RequestAuthentication')) throw new Error('kind');
    expect(inline.spec.jwtRules[0]!.fromHeaders).toBeUndefined();
    expect(inline.spec.jwtRules[0]!.clockSkew).toBe(5000);
    expect(validDocument(doc(AUTHN, 'jwtRules: [{ name: a, issuer: i, jwksUri: "http://127.0.0.1:8080/jwks" }]')).kind).toBe(AUTHN);
  });

  it('RequestAuthentication: introspection alone, with its defaults', () => {
    const d = validDocument(doc(AUTHN, 'introspection: { endpoint: "https://idp.example/introspect", clientId: orders, clientSecretFile: idp-secret }'));
    if (!isKind(d, 'RequestAuthentication')) throw new Error('kind');
    expect(d.spec.jwtRules).toEqual([]);
    expect(d.spec.introspection).toEqual({
      name: 'introspection',
      endpoint: 'https://idp.example/introspect',
      clientId: 'orders',
      clientSecretFile: 'idp-secret',
      clockSkew: 30_000,
      cacheTtl: 60_000,
      cacheSize: 10_000,
      timeout: 2_000,
      fromHeaders: [{ name: 'authorization', prefix: 'Bearer ' }],
      forwardOriginalToken: false,
    });
    const withCookie = validDocument(doc(AUTHN, 'introspection: { endpoint: "http://localhost:9000/i", clientId: o, clientSecretFile: s, fromCookies: [sid], cacheTtl: 5m, timeout: 500ms }'));
    if (!isKind(withCookie, 'RequestAuthentication')) throw new Error('kind');
    expect(withCookie.spec.introspection).toMatchObject({ fromCookies: ['sid'], cacheTtl: 300_000, timeout: 500 });
    expect(withCookie.spec.introspection!.fromHeaders).toBeUndefined();
  });

  it('RateLimitPolicy: periods in ms, header keys lower-cased, local scope', () => {
    const d = validDocument(
      doc(RATE, 'rules: [{ name: per-tenant, match: { paths: ["/api/*"], methods: [post] }, key: [source.principal, "header:X-Tenant", "claim:sub"], limit: { requests: 100, per: 1m }, burst: 20 }]'),
    );
    if (!isKind(d, 'RateLimitPolicy')) throw new Error('kind');
    expect(d.spec.rules[0]).toEqual({
      name: 'per-tenant',
      match: { paths: ['/api/*'], methods: ['POST'] },
      key: ['source.principal', 'header:x-tenant', 'claim:sub'],
      limit: { requests: 100, per: 60_000 },
      burst: 20,
      scope: 'local',
    });
  });

  it('IPAccessPolicy: IPv4 and IPv6, auto-ban defaults', () => {
    const d = validDocument(doc(IP, 'allow: [10.0.0.0/8, "::1", "2001:db8::/32"]\ndeny: [10.1.2.3]\ntrustedProxies: [172.16.0.0/12]\nautoBan: { threshold: 5 }'));
    if (!isKind(d, 'IPAccessPolicy')) throw new Error('kind');
    expect(d.spec.autoBan).toEqual({ threshold: 5, window: 60_000, duration: 600_000, maxEntries: 10_000 });
  });

  it('ValidationPolicy: sizes in bytes, media types lower-cased, the JSON Schema as written', () => {
    const d = validDocument(
      doc(
        VALIDATION,
        'rules: [{ name: body, match: { paths: ["/orders*"] }, maxBodyBytes: 64KiB, contentTypes: [Application/JSON, "text/*"], requiredHeaders: [X-Request-Id], jsonSchema: { type: object, properties: { id: { type: string, pattern: "^[a-z]+$" }, pattern: { type: string } }, required: [id] } }]',
      ),
    );
    if (!isKind(d, 'ValidationPolicy')) throw new Error('kind');
    expect(d.spec.rules[0]!.maxBodyBytes).toBe(65536);
    expect(d.spec.rules[0]!.contentTypes).toEqual(['application/json', 'text/*']);
    expect(d.spec.rules[0]!.requiredHeaders).toEqual(['x-request-id']);
    expect(d.spec.rules[0]!.jsonSchema).toMatchObject({ required: ['id'] });
  });

  it('Route: the sidecar route defaults, versions with deprecation', () => {
    const d = validDocument(
      doc(
        ROUTE,
        `selector: { services: [frontend] }
service: orders.shop
routes:
  - name: v2-canary
    match: { path: { regex: "/orders/[0-9]+" }, headers: [{ name: x-canary, exact: "1" }] }
    backends: [{ subset: { version: v2 }, weight: 10 }, { service: orders-legacy, weight: 90 }]
    timeout: 2s
    retries: { attempts: 1 }
versions:
  - { name: v1, subset: { version: v1 }, deprecated: { sunset: 2026-06-30, since: "2026-01-15T09:00:00Z", message: "v1 goes away; use v2" } }
  - { name: v2, subset: { version: v2 } }`,
      ),
    );
    if (!isKind(d, 'Route')) throw new Error('kind');
    const route = d.spec.routes[0]!;
    expect(route.timeout).toBe(2000);
    expect(route.match.query).toEqual([]);
    expect(route.retries).toMatchObject({ attempts: 1, retryOn: ['connect-failure', 'reset', 'gateway-error', 'unavailable'], backoff: { base: 25, max: 250 }, bufferLimit: 65536 });
    expect(route.requestHeaders).toEqual({ set: {}, add: {}, remove: [] });
    expect(d.spec.versions![0]!.deprecated!.sunset).toBe('2026-06-30');
    expect(d.spec.versions![0]!.deprecated!.since).toBe('2026-01-15T09:00:00Z');
  });

  it('Route: versions with brown-out windows, retired, and a successor', () => {
    const d = validDocument(
      doc(
        ROUTE,
        `service: orders
versions:
  - name: v1
    subset: { version: v1 }
    brownouts: [{ start: "2026-05-05T10:00:00Z", end: "2026-05-05T11:00:00Z" }, { start: 2026-06-01, end: 2026-06-02 }]
    successor: { version: v2, link: "https://docs.example/orders/v2" }
  - { name: v0, subset: { version: v0 }, retired: true }
  - { name: v2, subset: { version: v2 } }`,
      ),
    );
    if (!isKind(d, 'Route')) throw new Error('kind');
    expect(d.spec.versions![0]!.brownouts).toEqual([
      { start: '2026-05-05T10:00:00Z', end: '2026-05-05T11:00:00Z' },
      { start: '2026-06-01', end: '2026-06-02' },
    ]);
    expect(d.spec.versions![0]!.successor).toEqual({ version: 'v2', link: 'https://docs.example/orders/v2' });
    expect(d.spec.versions![1]!.retired).toBe(true);
  });

  it('validates its own output to the same document (the sidecar validates again)', () => {
    const validator = createPolicyValidator();
    const texts = [
      doc(AUTHZ, 'rules: [{ to: [{ methods: [get], hosts: ["*.A.com"] }] }]'),
      doc(AUTHN, 'jwtRules: [{ name: a, issuer: i, jwksUri: "https://i/jwks", clockSkew: 1m }]'),
      doc(AUTHN, 'introspection: { endpoint: "https://i/introspect", clientId: c, clientSecretFile: s, cacheTtl: 90s }'),
      doc(RATE, 'rules: [{ name: a, key: ["header:X-A"], limit: { requests: 1, per: 1.5s } }]'),
      doc(IP, 'autoBan: { threshold: 1, window: 1h }'),
      doc(VALIDATION, 'rules: [{ name: a, maxBodyBytes: 1MiB, contentTypes: [TEXT/plain] }]'),
      doc(ROUTE, 'service: orders\nroutes: [{ timeout: 1m, retries: { perTryTimeout: 250ms } }]'),
      doc(ROUTE, 'service: orders\nversions: [{ name: v1, subset: { version: v1 }, deprecated: { sunset: 2026-06-30, since: 2026-01-15, message: bye } }]'),
    ];
    for (const text of texts) {
      const first = validDocument(text, { validator });
      const again = validator.validate(JSON.parse(JSON.stringify(first)), { file: 'api', index: 0 });
      expect(again.ok && again.document.document).toEqual(first);
    }
  });

  it('freezes valid documents', () => {
    const d = validDocument(doc(AUTHZ, 'rules: [{ name: a }]'));
    expect(Object.isFrozen(d.spec)).toBe(true);
    expect(Object.isFrozen((d.spec.rules as unknown[])[0])).toBe(true);
  });
});

/** Field names of an object schema, recursively (wrappers unwrapped, leaves as ''). */
function fieldTree(schema: z.ZodType): unknown {
  const def = (schema as unknown as { _zod: { def: Record<string, unknown> & { type: string } } })._zod.def;
  switch (def.type) {
    case 'optional':
    case 'default':
    case 'prefault':
    case 'nullable':
      return fieldTree(def.innerType as z.ZodType);
    case 'pipe':
      return fieldTree(def.in as z.ZodType);
    case 'array':
      return [fieldTree(def.element as z.ZodType)];
    case 'object':
      return Object.fromEntries(Object.entries(def.shape as Record<string, z.ZodType>).map(([k, v]) => [k, fieldTree(v)]));
    default:
      return '';
  }
}

describe('Route and the sidecar config share one route schema', () => {
  it('has the same fields, at every level (src/config/route-schema.ts builds both)', () => {
    const services = sidecarConfigSchema.shape.services.unwrap().element;
    const sidecarRoute = services.shape.routes.unwrap().element;
    const policyRoute = routeSchema(DEFAULT_POLICY_LIMITS).shape.spec.shape.routes.unwrap().element;
    expect(fieldTree(policyRoute)).toEqual(fieldTree(sidecarRoute));
  });
});
