import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCaMaterial } from '../../../src/ca/ca-material.ts';
import { createCaMaterialDir } from '../../helpers/ca-fixture.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';

describe('loadCaMaterial: refuses material that does not fit together', () => {
  const clock = createFakeClock(Date.now());
  let a: string;
  let b: string;
  const load = (signing: { certFile: string; keyFile: string; chainFiles?: string[] }, roots: string[], at = clock) =>
    loadCaMaterial({ signing: { chainFiles: [], ...signing }, trustBundle: { files: roots } }, { clock: at, resolvePath: (f) => (path.isAbsolute(f) ? f : path.join(a, f)), configFile: 'ca.yaml' });
  beforeAll(async () => {
    a = await createCaMaterialDir({ intermediate: true, clock });
    b = await createCaMaterialDir({ clock });
  });
  afterAll(async () => {
    await rm(a, { recursive: true, force: true });
    await rm(b, { recursive: true, force: true });
  });

  it('sends the intermediate after the leaf, and no root', async () => {
    const withIntermediate = await load({ certFile: 'intermediate-ca.pem', keyFile: 'intermediate-ca.key' }, ['trust-bundle.pem']);
    expect(withIntermediate.chainPem).toHaveLength(1);
    expect(withIntermediate.chainPem[0]).toContain('BEGIN CERTIFICATE');
    expect(withIntermediate.rootsPem).toHaveLength(1);
    const rootSigns = await load({ certFile: 'root-ca.pem', keyFile: 'root-ca.key' }, ['trust-bundle.pem']);
    expect(rootSigns.chainPem).toEqual([]);
  });

  it('lists every root once across files', async () => {
    const m = await load({ certFile: 'root-ca.pem', keyFile: 'root-ca.key' }, ['trust-bundle.pem', 'root-ca.pem', path.join(b, 'root-ca.pem')]);
    expect(m.rootsPem).toHaveLength(2);
  });

  it.each<[string, Parameters<typeof load>[0], () => string[], string]>([
    [
      'a key of another certificate',
      { certFile: 'root-ca.pem', keyFile: 'intermediate-ca.key' },
      () => ['trust-bundle.pem'],
      'ca.yaml: signing.keyFile: does not match the public key of signing.certFile',
    ],
    [
      'a signer no root in the bundle issued',
      { certFile: 'intermediate-ca.pem', keyFile: 'intermediate-ca.key' },
      () => [path.join(b, 'root-ca.pem')],
      'ca.yaml: trustBundle.files: no root in the trust bundle issued the signing certificate',
    ],
    ['a key file that is not a key', { certFile: 'root-ca.pem', keyFile: 'root-ca.pem' }, () => ['trust-bundle.pem'], 'ca.yaml: signing.keyFile: not a PEM private key'],
    ['a certificate file that holds none', { certFile: 'root-ca.key', keyFile: 'root-ca.key' }, () => ['trust-bundle.pem'], 'ca.yaml: signing.certFile: root-ca.key holds no PEM certificate'],
    ['a chain in the wrong place', { certFile: 'root-ca.pem', keyFile: 'root-ca.key', chainFiles: ['intermediate-ca.pem'] }, () => ['trust-bundle.pem'], 'ca.yaml: signing.chainFiles:'],
  ])('refuses %s', async (_name, signing, roots, message) => {
    await expect(load(signing, roots())).rejects.toThrow(message);
  });

  it('refuses an expired issuing certificate', async () => {
    const later = createFakeClock(Date.now() + 11 * 365 * 86_400_000);
    await expect(load({ certFile: 'root-ca.pem', keyFile: 'root-ca.key' }, ['trust-bundle.pem'], later)).rejects.toThrow(/signing\.certFile: certificate .* expired at/);
  });
});
