import { errors, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { isJwtRejection, joseRejection, MAX_TOKEN_BYTES, readJwtHeader } from '../../../src/identity/jwt-checks.ts';

const ES256 = new Set(['ES256']);
const b64 = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('readJwtHeader: the checks every verifier makes before jose', () => {
  it('reads alg and kid of a compact JWS whose alg is allowed', () => {
    expect(readJwtHeader(`${b64({ alg: 'ES256', kid: 'k1' })}.${b64({})}.c2ln`, ES256)).toEqual({ alg: 'ES256', kid: 'k1' });
  });

  it.each([
    ['longer than the bound', 'a'.repeat(MAX_TOKEN_BYTES + 1), 'malformed'],
    ['not three segments', 'abc.def', 'malformed'],
    ['a second spelling of the same bytes (unused low bits)', `${b64({ alg: 'ES256' })}.${b64({})}.c2l`, 'malformed'],
    ['a header that is not JSON', `${Buffer.from('{').toString('base64url')}.${b64({})}.c2ln`, 'malformed'],
    ['alg none', `${b64({ alg: 'none' })}.${b64({})}.`, 'algorithm'],
    ['HS256 (the public-key-as-secret confusion)', `${b64({ alg: 'HS256' })}.${b64({})}.c2ln`, 'algorithm'],
    ['no alg at all', `${b64({ kid: 'x' })}.${b64({})}.c2ln`, 'algorithm'],
  ])('refuses %s', (_case, token, problem) => {
    const read = readJwtHeader(token, ES256);
    expect(isJwtRejection(read) && read.problem).toBe(problem);
  });

  it('names the refused algorithm, bounded, and never echoes the token', () => {
    const token = `${b64({ alg: 'x'.repeat(100) })}.${b64({ secret: 'do-not-echo' })}.c2ln`;
    const read = readJwtHeader(token, ES256);
    expect(isJwtRejection(read) && read.reason).toMatch(/^token algorithm "x{19} not allowed \(allowed: ES256\)$/);
  });
});

describe("joseRejection: one reading of jose's errors", () => {
  it.each([
    [new errors.JWTExpired('exp', {}, 'exp', 'check_failed'), 'expired', 'token expired'],
    [new errors.JWTClaimValidationFailed('iss', {}, 'iss', 'check_failed'), 'issuer', 'token issuer not accepted'],
    [new errors.JWTClaimValidationFailed('aud', {}, 'aud', 'check_failed'), 'audience', 'token audience not accepted'],
    [new errors.JWTClaimValidationFailed('nbf', {}, 'nbf', 'check_failed'), 'not_yet_valid', 'token not valid yet ("nbf" is in the future)'],
    [new errors.JWTClaimValidationFailed('exp', {}, 'exp', 'missing'), 'missing_claim', 'token lacks the "exp" claim'],
    [new errors.JOSENotSupported('crit'), 'unsupported', 'token uses an unsupported JOSE feature (e.g. an unknown crit header)'],
    [new errors.JWSSignatureVerificationFailed(), 'signature', 'SIG'],
    [new errors.JWKSTimeout(), 'keys_unavailable', 'token signing keys unavailable (JWKS)'],
    [new TypeError('fetch failed'), 'keys_unavailable', 'token signing keys unavailable (JWKS)'],
    [new TypeError('key does not fit'), 'signature', 'SIG'],
  ])('%s is %s', (err, problem, reason) => {
    expect(joseRejection(err, 'SIG')).toEqual({ problem, reason });
  });

  it('reads a real jose verification failure as a signature problem', async () => {
    const signer = await generateKeyPair('ES256');
    const other = await generateKeyPair('ES256');
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'ES256' }).setExpirationTime('1h').sign(signer.privateKey);
    const failure = await jwtVerify(token, other.publicKey).catch((err: unknown) => err);
    expect(joseRejection(failure, 'SIG')).toEqual({ problem: 'signature', reason: 'SIG' });
  });
});
