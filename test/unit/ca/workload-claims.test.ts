import { describe, expect, it } from 'vitest';
import { identityFromClaims } from '../../../src/ca/workload-claims.ts';

const TD = 'cluster.local';

describe('identityFromClaims: Kubernetes service-account token shape', () => {
  it('reads sub system:serviceaccount:<ns>:<sa>', () => {
    expect(identityFromClaims({ sub: 'system:serviceaccount:shop:web' }, TD)).toEqual({ namespace: 'shop', serviceAccount: 'web', spiffeId: 'spiffe://cluster.local/ns/shop/sa/web' });
  });

  it('reads the kubernetes.io claim alone', () => {
    const claims = { sub: 'someone', 'kubernetes.io': { namespace: 'shop', serviceaccount: { name: 'web', uid: 'x' }, pod: { name: 'p' } } };
    expect(identityFromClaims(claims, TD)).toMatchObject({ spiffeId: 'spiffe://cluster.local/ns/shop/sa/web' });
  });

  it('accepts both when they agree and refuses when they differ', () => {
    const k8s = { namespace: 'shop', serviceaccount: { name: 'web' } };
    expect(identityFromClaims({ sub: 'system:serviceaccount:shop:web', 'kubernetes.io': k8s }, TD)).toMatchObject({ serviceAccount: 'web' });
    expect(identityFromClaims({ sub: 'system:serviceaccount:kube-system:admin', 'kubernetes.io': k8s }, TD)).toBe('claims "sub" and "kubernetes.io" name different service accounts');
  });

  it.each([
    ['no identity at all', { sub: 'alice' }],
    ['a kubernetes.io claim without a service account', { 'kubernetes.io': { namespace: 'shop' } }],
    ['path traversal in the namespace', { sub: 'system:serviceaccount:../x:web' }],
    ['upper case', { sub: 'system:serviceaccount:Shop:web' }],
    ['a slash in the service account', { 'kubernetes.io': { namespace: 'shop', serviceaccount: { name: 'a/b' } } }],
    ['an empty name', { 'kubernetes.io': { namespace: 'shop', serviceaccount: { name: '' } } }],
  ])('refuses %s', (_name, claims) => {
    expect(typeof identityFromClaims(claims, TD)).toBe('string');
  });
});
