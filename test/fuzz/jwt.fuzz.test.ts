import fc from 'fast-check';
import { afterAll, beforeAll, expect } from 'vitest';
import type { Filter } from '../../src/core/filter.ts';
import { reasonCode } from '../../src/core/reason-codes.ts';
import type { Verdict } from '../../src/core/verdict.ts';
import { createAuthnFilter } from '../../src/filters/authn/authn-filter.ts';
import { createAuthnRuntime } from '../../src/filters/authn/authn-runtime.ts';
import { createFakeClock } from '../helpers/fake-clock.ts';
import type { JsonServer, TestKey } from '../unit/filters/authn/authn-fixtures.ts';
import { authnDoc, b64url, ISSUER, jwksOf, makeCall, makeKey, mint, startJsonServer } from '../unit/filters/authn/authn-fixtures.ts';
import { fuzzTarget } from './fuzz-harness.ts';

/*
 * Fuzzing JWT parsing in the authentication filter: tokens built from a valid
 * one with the header, payload or signature replaced, re-encoded, cut or
 * garbled, sent in every place a token may travel. Every bad token is refused
 * with an authn.* code (401, or 503 when keys are unavailable), never a
 * thrown exception (500 filter.error), and the reply never quotes the token.
 */

const NOW = 1_800_000_000;
const REMOTE_ISSUER = 'https://remote.example';

let ec: TestKey;
let rsa: TestKey;
let jwks: JsonServer;
let filter: Filter;
/** A valid token of each issuer: the seeds the mutations start from. */
let seeds: string[] = [];

const HEADER_VALUES: unknown[] = [
  'ES256',
  'RS256',
  'HS256',
  'none',
  'None',
  'PS256',
  'EdDSA',
  'ES512',
  '',
  'e1',
  'k1',
  'unknown',
  'a'.repeat(5000),
  0,
  -1,
  1e308,
  true,
  null,
  [],
  {},
  ['ES256'],
  { alg: 'ES256' },
  'https://evil.example/jwks',
  '../../etc/passwd',
  '\u0000',
  '\ud800',
  '__proto__',
];
const HEADER_KEYS = ['alg', 'kid', 'typ', 'crit', 'b64', 'jku', 'jwk', 'x5u', 'x5c', 'cty', 'zip', 'enc', '__proto__', 'constructor'];

const jsonish = fc.oneof(fc.constantFrom(...HEADER_VALUES), fc.jsonValue({ maxDepth: 2 }), fc.string({ unit: 'binary', maxLength: 10 }));

const header = fc.oneof(
  fc
    .record({ alg: fc.constantFrom('ES256', 'RS256'), kid: fc.constantFrom('e1', 'k1', 'r1') })
    .chain((base) => fc.dictionary(fc.constantFrom(...HEADER_KEYS), jsonish, { maxKeys: 4 }).map((extra) => ({ ...base, ...extra }))),
  jsonish,
);

const payload = fc.oneof(
  fc
    .record({ iss: fc.constantFrom(ISSUER, REMOTE_ISSUER), sub: fc.constant('alice'), aud: fc.constant('orders'), exp: fc.constant(NOW + 300) })
    .chain((base) => fc.dictionary(fc.constantFrom('iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'role'), jsonish, { maxKeys: 3 }).map((extra) => ({ ...base, ...extra }))),
  jsonish,
);

/** How a segment is written: JSON in base64url, or something else entirely. */
const encoded = (value: fc.Arbitrary<unknown>) =>
  fc.oneof(
    { weight: 4, arbitrary: value.map((v) => b64url(v)) },
    { weight: 1, arbitrary: value.map((v) => Buffer.from(JSON.stringify(v) ?? '').toString('base64')) },
    { weight: 1, arbitrary: value.map((v) => JSON.stringify(v) ?? '') },
    { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...'ABCxyz019-_+/=.% \t'.split('')), maxLength: 40 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  );

interface TokenInput {
  /** Which seed token, and how to change it. */
  seed: number;
  mutation:
    | { kind: 'segments'; header?: string; payload?: string; signature?: string }
    | { kind: 'edit'; at: number; remove: number; insert: string }
    | { kind: 'raw'; token: string }
    | { kind: 'long'; repeat: number };
  where: 'bearer' | 'bearer-odd' | 'cookie' | 'param' | 'twice';
}

const mutation: fc.Arbitrary<TokenInput['mutation']> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record(
      {
        kind: fc.constant('segments' as const),
        header: fc.option(encoded(header), { nil: undefined }),
        payload: fc.option(encoded(payload), { nil: undefined }),
        signature: fc.option(
          fc.oneof(
            fc.constant(''),
            fc.base64String({ maxLength: 100 }).map((s) => s.replace(/=/g, '')),
          ),
          { nil: undefined },
        ),
      },
      { requiredKeys: ['kind'] },
    ),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('edit' as const),
      at: fc.nat(),
      remove: fc.nat({ max: 8 }),
      insert: fc.oneof(fc.constantFrom('.', '..', '=', ' ', '%', '\u0000', 'é', 'eyJ'), fc.string({ unit: 'binary', maxLength: 4 })),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('raw' as const),
      token: fc.oneof(fc.constantFrom('', '.', '..', '...', 'a.b.c', 'a.b.c.d.e', 'eyJ.eyJ.', 'Bearer', ' '), fc.string({ unit: 'binary', maxLength: 60 })),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('long' as const), repeat: fc.integer({ min: 2, max: 400 }) }) },
);

function tokenOf(input: TokenInput): string {
  const seed = seeds[input.seed % seeds.length]!;
  const m = input.mutation;
  switch (m.kind) {
    case 'segments': {
      const [h, p, s] = seed.split('.');
      return [m.header ?? h, m.payload ?? p, m.signature ?? s].join('.');
    }
    case 'edit': {
      const i = m.at % (seed.length + 1);
      return seed.slice(0, i) + m.insert + seed.slice(i + m.remove);
    }
    case 'raw':
      return m.token;
    case 'long':
      return seed.repeat(m.repeat);
  }
}

function callWith(token: string, where: TokenInput['where']) {
  switch (where) {
    case 'bearer':
      return makeCall({ headers: { authorization: `Bearer ${token}` } });
    case 'bearer-odd':
      return makeCall({ headers: { authorization: `bEaReR   ${token}  ` } });
    case 'cookie':
      return makeCall({ headers: { cookie: `a=1; session=${token}; b=2` } });
    case 'param':
      return makeCall({ query: `x=1&access_token=${encodeURIComponent(token)}` });
    case 'twice':
      return makeCall({ headers: { authorization: `Bearer ${token}`, cookie: `session=${seeds[0]}` } });
  }
}

beforeAll(async () => {
  [ec, rsa] = await Promise.all([makeKey('e1', 'ES256'), makeKey('r1')]);
  jwks = await startJsonServer(jwksOf(rsa));
  const clock = createFakeClock(NOW * 1000);
  const locations = `fromHeaders: [{ name: authorization, prefix: "Bearer " }], fromCookies: [session], fromParams: [access_token]`;
  filter = createAuthnFilter(
    [
      authnDoc(`jwtRules:\n  - { name: local, issuer: "${ISSUER}", audiences: [orders], algorithms: [ES256], jwks: { keys: [${JSON.stringify(ec.publicJwk)}] }, ${locations} }`, 'local'),
      authnDoc(`jwtRules:\n  - { name: remote, issuer: "${REMOTE_ISSUER}", audiences: [orders], algorithms: [RS256], jwksUri: "${jwks.url}/jwks", ${locations} }`, 'remote'),
    ],
    createAuthnRuntime({ random: () => 0.5, clock, jwksTimings: { timeoutMs: 2000 } }),
  );
  seeds = [await mint({ key: ec, now: NOW }), await mint({ key: rsa, now: NOW, iss: REMOTE_ISSUER })];
  // The seeds themselves pass: the mutations are what gets refused.
  for (const seed of seeds) expect(await filter.onRequest(callWith(seed, 'bearer'))).toEqual({ kind: 'continue' });
});
afterAll(async () => {
  await jwks?.close();
});

fuzzTarget<TokenInput>({
  name: 'jwt-header',
  arbitrary: fc.record({ seed: fc.nat({ max: 1 }), mutation, where: fc.constantFrom('bearer', 'bearer', 'bearer-odd', 'cookie', 'param', 'twice') }),
  shortRuns: 1500,
  shortMs: 3000,
  async check(input) {
    const token = tokenOf(input);
    let verdict: Verdict;
    try {
      verdict = await filter.onRequest(callWith(token, input.where));
    } catch (err) {
      throw new Error(`the filter threw (a 500 filter.error) for token ${JSON.stringify(token.slice(0, 200))}: ${(err as Error).stack}`);
    }
    if (verdict.kind === 'continue') {
      // Only the valid token itself gets through: no other spelling of it, no token that was changed.
      expect(seeds, `accepted ${JSON.stringify(token.slice(0, 200))}`).toContain(token.trim());
      return;
    }
    expect(verdict.code, `${verdict.code}: ${verdict.reason}`).toMatch(/^authn\./);
    expect([401, 503]).toContain(reasonCode(verdict.code).http);
    // The reply names what failed, never the credential.
    if (token.trim().length >= 16) expect(verdict.reason).not.toContain(token.trim());
    expect(verdict.reason.length).toBeLessThan(300);
  },
});
