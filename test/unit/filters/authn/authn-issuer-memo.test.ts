import * as jose from 'jose';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { Verdict } from '../../../../src/core/verdict.ts';
import { createAuthnFilter } from '../../../../src/filters/authn/authn-filter.ts';
import { createAuthnRuntime } from '../../../../src/filters/authn/authn-runtime.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';
import type { TestKey } from './authn-fixtures.ts';
import { authnDoc, ISSUER, makeCall, makeKey, mint } from './authn-fixtures.ts';

// decodeJwt counted: the filter reads a token's issuer with it to pick the rule that verifies the token.
vi.mock('jose', async (importOriginal) => {
  const original = await importOriginal<typeof import('jose')>();
  return { ...original, decodeJwt: vi.fn(original.decodeJwt) };
});

/* A caller's repeated token: its issuer is remembered once it verified, and only then. */

const NOW = 1_800_000_000;
let key: TestKey;

beforeAll(async () => {
  key = await makeKey('e1', 'ES256');
});

function filter() {
  const runtime = createAuthnRuntime({ random: () => 0.5, clock: createFakeClock(NOW * 1000) });
  const spec = `jwtRules: [{ name: idp, issuer: "${ISSUER}", algorithms: [ES256], jwks: { keys: [${JSON.stringify(key.publicJwk)}] }, fromHeaders: [{ name: authorization, prefix: "Bearer " }] }]`;
  return createAuthnFilter([authnDoc(spec)], runtime);
}

async function outcome(f: ReturnType<typeof filter>, headers: Record<string, string>): Promise<string> {
  const v: Verdict = await f.onRequest(makeCall({ headers }));
  return v.kind === 'continue' ? 'continue' : `${v.code}`;
}

describe('authn: issuers of verified tokens', () => {
  it('decodes a token that verified once, however often its caller sends it again', async () => {
    const f = filter();
    const token = await mint({ key, now: NOW });
    vi.mocked(jose.decodeJwt).mockClear();
    for (let i = 0; i < 5; i++) expect(await outcome(f, { authorization: `Bearer ${token}` })).toBe('continue');
    expect(vi.mocked(jose.decodeJwt)).toHaveBeenCalledTimes(1);
  });

  it('keeps no token that failed: each is decoded and refused again', async () => {
    const f = filter();
    const stranger = await makeKey('e1', 'ES256');
    const forged = await mint({ key: stranger, now: NOW });
    vi.mocked(jose.decodeJwt).mockClear();
    for (let i = 0; i < 3; i++) expect(await outcome(f, { authorization: `Bearer ${forged}` })).toBe('authn.jwt_invalid');
    expect(vi.mocked(jose.decodeJwt)).toHaveBeenCalledTimes(3);
  });

  it('a remembered token is still refused where its own rule does not look for it', async () => {
    const other = await makeKey('o1', 'ES256');
    const runtime = createAuthnRuntime({ random: () => 0.5, clock: createFakeClock(NOW * 1000) });
    const rule = (name: string, issuer: string, k: TestKey, header: string) =>
      `{ name: ${name}, issuer: "${issuer}", algorithms: [ES256], jwks: { keys: [${JSON.stringify(k.publicJwk)}] }, fromHeaders: [{ name: ${header}, prefix: "Bearer " }] }`;
    const f = createAuthnFilter([authnDoc(`jwtRules: [${rule('idp', ISSUER, key, 'x-token')}, ${rule('other', 'https://other.example', other, 'authorization')}]`)], runtime);
    const token = await mint({ key, now: NOW });
    expect(await outcome(f, { 'x-token': `Bearer ${token}` })).toBe('continue');
    // Its issuer's rule reads x-token only: sent where the other rule looks, it is refused as before.
    expect(await outcome(f, { authorization: `Bearer ${token}` })).toBe('authn.jwt_issuer');
    expect(await outcome(f, { 'x-token': `Bearer ${token}` })).toBe('continue');
  });
});
