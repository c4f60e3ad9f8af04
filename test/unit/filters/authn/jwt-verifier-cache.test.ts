import { generateKeyPair, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import type { KeySource } from '../../../../src/filters/authn/jwks-keys.ts';
import { createJwtVerifier } from '../../../../src/filters/authn/jwt-verifier.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';

describe('verified-token cache', () => {
  it('answers a repeated token from the cache, but not once it expired or its key left the key set', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const clock = createFakeClock(Date.now());
    let lookups = 0;
    let present = true;
    const keys: KeySource = {
      lookup: async () => {
        lookups++;
        return present ? [{ key: publicKey, kid: 'k1' } as never] : [];
      },
    } as KeySource;
    const verifier = createJwtVerifier({ issuer: 'https://idp', audiences: ['orders'], algorithms: ['ES256'], clockSkewMs: 0 }, keys, clock);
    const token = await new SignJWT({ sub: 'alice' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer('https://idp')
      .setAudience('orders')
      .setExpirationTime(Math.floor(clock.now() / 1000) + 60)
      .sign(privateKey);
    const first = await verifier.verify(token);
    const second = await verifier.verify(token);
    expect(first.ok).toBe(true);
    expect(second).toBe(first); // the cached outcome itself
    present = false; // key rotated out of the set: the cache must not vouch for the token any more
    expect((await verifier.verify(token)).ok).toBe(false);
    present = true;
    expect((await verifier.verify(token)).ok).toBe(true);
    clock.advance(61_000);
    const expired = await verifier.verify(token);
    expect(expired.ok).toBe(false);
    expect(lookups).toBeGreaterThanOrEqual(5);
  });
});
