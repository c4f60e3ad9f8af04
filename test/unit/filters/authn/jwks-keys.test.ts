import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { keysFor, parseJwks } from '../../../../src/filters/authn/jwks-keys.ts';

const jwk = (type: 'rsa' | 'ec' | 'ed25519', extra: Record<string, unknown> = {}) => {
  const { publicKey, privateKey } =
    type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  return { pub: { ...publicKey.export({ format: 'jwk' }), ...extra }, priv: { ...privateKey.export({ format: 'jwk' }), ...extra } };
};

describe('JWKS parsing and key choice', () => {
  const rsa = jwk('rsa', { kid: 'r1' });
  const ec = jwk('ec', { kid: 'e1' });
  const ed = jwk('ed25519', { kid: 'd1' });

  it('keeps asymmetric signing keys only', () => {
    const keys = parseJwks({
      keys: [rsa.pub, ec.pub, ed.pub, { kty: 'oct', k: 'c2VjcmV0', kid: 'h1' }, { ...jwk('rsa').pub, use: 'enc', kid: 'x' }, { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }, 'junk'],
    });
    expect(typeof keys === 'string' ? keys : keys.map((k) => k.kid)).toEqual(['r1', 'e1', 'd1']);
  });

  it('uses only the public members of a key that leaks private ones', () => {
    const keys = parseJwks({ keys: [rsa.priv] });
    expect(typeof keys !== 'string' && keys[0]!.key.type).toBe('public');
  });

  it('a document without a usable key is a problem, not an empty set', () => {
    expect(parseJwks({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }] })).toMatch(/no usable/);
    expect(parseJwks({ nope: [] })).toMatch(/not a JWKS/);
    expect(parseJwks(null)).toMatch(/not a JWKS/);
  });

  it('offers a key only to the algorithms of its type (no key-type confusion)', () => {
    const keys = parseJwks({ keys: [rsa.pub, ec.pub, ed.pub, { ...jwk('rsa').pub, kid: 'pinned', alg: 'PS256' }] });
    if (typeof keys === 'string') throw new Error(keys);
    const kids = (alg: string, kid?: string) => keysFor(keys, kid, alg).map((k) => k.kid);
    expect(kids('RS256')).toEqual(['r1']);
    expect(kids('PS256')).toEqual(['r1', 'pinned']);
    expect(kids('ES256')).toEqual(['e1']);
    expect(kids('ES384')).toEqual([]);
    expect(kids('EdDSA')).toEqual(['d1']);
    expect(kids('HS256')).toEqual([]);
    expect(kids('none')).toEqual([]);
    expect(kids('RS256', 'e1')).toEqual([]);
    expect(kids('ES256', 'e1')).toEqual(['e1']);
  });
});
