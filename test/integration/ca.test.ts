import type { webcrypto } from 'node:crypto';
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { decodeProtectedHeader, importSPKI, jwtVerify, SignJWT, UnsecuredJWT } from 'jose';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { SignResponse } from '../../src/identity/ca-api.ts';
import { bearerMetadata, caRefusalReason } from '../../src/identity/ca-api.ts';
import type { KeyType } from '../../src/identity/x509.ts';
import { createCsr, generateKeyPair, privateKeyToPem, x509 } from '../../src/identity/x509.ts';
import type { TestCa } from '../helpers/ca-fixture.ts';
import { createCaMaterialDir, startTestCa } from '../helpers/ca-fixture.ts';
import { meshgateChild as meshgate } from '../helpers/meshgate-cli.ts';

const HOUR = 3_600_000;

async function workload(type: KeyType = 'ecdsa-p256'): Promise<{ keyPem: string; csr: string; keys: webcrypto.CryptoKeyPair }> {
  const keys = (await generateKeyPair(type)) as webcrypto.CryptoKeyPair;
  return { keys, keyPem: await privateKeyToPem(keys.privateKey as never), csr: await createCsr(keys as never, type) };
}

/** The gRPC error a promise rejected with, with the CA's reason from the trailers. */
async function refusal(promise: Promise<unknown>): Promise<{ code: number; reason: string; details: string }> {
  try {
    await promise;
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: e.code, reason: caRefusalReason(e) ?? '', details: e.details };
  }
  throw new Error('expected the call to fail');
}

function leafOf(res: SignResponse): X509Certificate {
  return new X509Certificate(res.certChainPem[0]!);
}

describe('meshgate ca: signing (ECDSA root, intermediate signer)', () => {
  let t: TestCa;
  beforeAll(async () => {
    t = await startTestCa({ intermediate: true, overrides: { rateLimit: { perIdentity: { requests: 3, window: '1m' } } } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('issues for the token identity only, whatever SPIFFE ID or subject the CSR asks for', async () => {
    const keys = (await generateKeyPair('ecdsa-p256')) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=admin, O=evil',
      keys: keys as never,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: 'url', value: 'spiffe://cluster.local/ns/kube-system/sa/admin' },
          { type: 'dns', value: 'evil.example' },
        ]),
      ],
    });
    const res = await t.client().sign({ csrPem: csr.toString('pem') }, bearerMetadata(await t.token('shop', 'frontend')));
    const leaf = leafOf(res);
    expect(leaf.subjectAltName).toBe('URI:spiffe://cluster.local/ns/shop/sa/frontend');
    expect(new x509.X509Certificate(leaf.raw).subject).toBe('');
    expect(res.spiffeId).toBe('spiffe://cluster.local/ns/shop/sa/frontend');
    expect(res.serial).toBe(leaf.serialNumber);
    expect(leaf.ca).toBe(false);
    expect(leaf.publicKey.export({ format: 'der', type: 'spki' })).toEqual(Buffer.from(csr.publicKey.rawData));
    const records = await t.audit();
    expect(records.at(-1)).toMatchObject({ event: 'issued', spiffeId: res.spiffeId, serial: res.serial, proof: 'token', caller: expect.stringContaining('127.0.0.1') });
  });

  it('returns leaf + intermediate that verify up to the root in the trust bundle; ttl and maxTtl bound notAfter', async () => {
    const w = await workload();
    const token = await t.token('shop', 'orders');
    const res = await t.client().sign({ csrPem: w.csr }, bearerMetadata(token));
    expect(res.certChainPem).toHaveLength(2);
    expect(res.trustBundlePem).toHaveLength(1);
    const [leaf, intermediate] = res.certChainPem.map((pem) => new X509Certificate(pem)) as [X509Certificate, X509Certificate];
    const root = new X509Certificate(res.trustBundlePem[0]!);
    expect(leaf.checkIssued(intermediate)).toBe(true);
    expect(leaf.verify(intermediate.publicKey)).toBe(true);
    expect(intermediate.checkIssued(root)).toBe(true);
    expect(intermediate.verify(root.publicKey)).toBe(true);
    expect(root.verify(root.publicKey)).toBe(true);

    const now = t.clock.now();
    // Default ttl 24h; notBefore backdated one minute.
    expect(Math.abs(new Date(leaf.validTo).getTime() - (now + 24 * HOUR))).toBeLessThan(2_000);
    expect(Math.abs(new Date(leaf.validFrom).getTime() - (now - 60_000))).toBeLessThan(2_000);
    expect(res.notAfterUnix).toBe(Math.floor(new Date(leaf.validTo).getTime() / 1000));

    const short = leafOf(await t.client().sign({ csrPem: w.csr, ttlSeconds: 3600 }, bearerMetadata(token)));
    expect(Math.abs(new Date(short.validTo).getTime() - (now + HOUR))).toBeLessThan(2_000);
    const capped = leafOf(await t.client().sign({ csrPem: w.csr, ttlSeconds: 1000 * 3600 }, bearerMetadata(await t.token('shop', 'orders-2'))));
    expect(Math.abs(new Date(capped.validTo).getTime() - (now + 48 * HOUR))).toBeLessThan(2_000);
  });

  it('GetTrustBundle serves the roots and the trust domain without any credentials', async () => {
    const bundle = await t.client().getTrustBundle();
    expect(bundle.trustDomain).toBe('cluster.local');
    expect(bundle.rootsPem.join('')).toBe(t.rootsPem);
  });

  describe('refuses bad tokens with UNAUTHENTICATED and an audit record', () => {
    const claims = (ns = 'shop', sa = 'web') => ({ sub: `system:serviceaccount:${ns}:${sa}`, 'kubernetes.io': { namespace: ns, serviceaccount: { name: sa } } });
    const key = () => createPrivateKey(t.tokenKeyPem);
    const sec = (ms: number) => Math.floor(ms / 1000);
    const cases: Array<[string, () => Promise<string>, string]> = [
      [
        'expired token',
        () =>
          new SignJWT(claims())
            .setProtectedHeader({ alg: 'ES256' })
            .setIssuer('meshgate')
            .setAudience('meshgate-ca')
            .setExpirationTime(sec(t.clock.now() - 5 * 60_000))
            .sign(key()),
        'ca.token_expired',
      ],
      [
        'nbf in the future',
        () =>
          new SignJWT(claims())
            .setProtectedHeader({ alg: 'ES256' })
            .setIssuer('meshgate')
            .setAudience('meshgate-ca')
            .setNotBefore(sec(t.clock.now() + 10 * 60_000))
            .setExpirationTime(sec(t.clock.now() + HOUR))
            .sign(key()),
        'ca.token_not_yet_valid',
      ],
      [
        'wrong audience',
        () =>
          new SignJWT(claims())
            .setProtectedHeader({ alg: 'ES256' })
            .setIssuer('meshgate')
            .setAudience('someone-else')
            .setExpirationTime(sec(t.clock.now() + HOUR))
            .sign(key()),
        'ca.token_audience',
      ],
      [
        'wrong issuer',
        () =>
          new SignJWT(claims())
            .setProtectedHeader({ alg: 'ES256' })
            .setIssuer('https://evil.example')
            .setAudience('meshgate-ca')
            .setExpirationTime(sec(t.clock.now() + HOUR))
            .sign(key()),
        'ca.token_issuer',
      ],
      [
        'signature by another key',
        () =>
          new SignJWT(claims())
            .setProtectedHeader({ alg: 'ES256' })
            .setIssuer('meshgate')
            .setAudience('meshgate-ca')
            .setExpirationTime(sec(t.clock.now() + HOUR))
            .sign(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey),
        'ca.token_signature',
      ],
      [
        'alg: none',
        async () =>
          new UnsecuredJWT(claims())
            .setIssuer('meshgate')
            .setAudience('meshgate-ca')
            .setExpirationTime(sec(t.clock.now() + HOUR))
            .encode(),
        'ca.token_algorithm',
      ],
      [
        'HS256 signed with the public key as the secret',
        async () => {
          const publicPem = await readFile(path.join(t.dir, 'token-signing.pub.pem'));
          return new SignJWT(claims())
            .setProtectedHeader({ alg: 'HS256' })
            .setIssuer('meshgate')
            .setAudience('meshgate-ca')
            .setExpirationTime(sec(t.clock.now() + HOUR))
            .sign(new Uint8Array(publicPem));
        },
        'ca.token_algorithm',
      ],
      [
        'valid signature but a namespace that is not a DNS label',
        () =>
          new SignJWT(claims('../kube-system', 'admin'))
            .setProtectedHeader({ alg: 'ES256' })
            .setIssuer('meshgate')
            .setAudience('meshgate-ca')
            .setExpirationTime(sec(t.clock.now() + HOUR))
            .sign(key()),
        'ca.token_claims',
      ],
      ['a token without exp', () => new SignJWT(claims()).setProtectedHeader({ alg: 'ES256' }).setIssuer('meshgate').setAudience('meshgate-ca').sign(key()), 'ca.token_claims'],
      ['not a JWT', async () => 'not-a-jwt', 'ca.token_malformed'],
    ];
    for (const [name, makeToken, reason] of cases) {
      it(name, async () => {
        const w = await workload();
        const token = await makeToken();
        const got = await refusal(t.client().sign({ csrPem: w.csr }, bearerMetadata(token)));
        expect(got).toMatchObject({ code: grpc.status.UNAUTHENTICATED, reason });
        expect(got.details).not.toContain(token);
        const last = (await t.audit()).at(-1);
        expect(last).toMatchObject({ event: 'refused', reason });
        expect(JSON.stringify(last)).not.toContain(token);
      });
    }

    it('no token and no client certificate', async () => {
      const w = await workload();
      expect(await refusal(t.client().sign({ csrPem: w.csr }))).toMatchObject({ code: grpc.status.UNAUTHENTICATED, reason: 'ca.token_missing' });
    });

    it('a token is never logged', () => {
      expect(JSON.stringify(t.logs)).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/);
    });
  });

  describe('refuses bad CSRs with INVALID_ARGUMENT', () => {
    it('garbage', async () => {
      expect(await refusal(t.client().sign({ csrPem: 'garbage' }, bearerMetadata(await t.token('shop', 'csr-a'))))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: 'ca.csr_malformed' });
      const junkPem = `-----BEGIN CERTIFICATE REQUEST-----\n${Buffer.from('not der at all').toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
      expect(await refusal(t.client().sign({ csrPem: junkPem }, bearerMetadata(await t.token('shop', 'csr-a'))))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: 'ca.csr_malformed' });
    });

    it('a CSR whose signature does not verify (no proof of possession)', async () => {
      const w = await workload();
      const der = Buffer.from(new x509.Pkcs10CertificateRequest(w.csr).rawData);
      der.writeUInt8(der.at(-1)! ^ 0x01, der.length - 1);
      const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
      const got = await refusal(t.client().sign({ csrPem: tampered }, bearerMetadata(await t.token('shop', 'csr-b'))));
      expect(got).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: 'ca.csr_signature' });
      expect((await t.audit()).at(-1)).toMatchObject({ event: 'refused', reason: 'ca.csr_signature', spiffeId: 'spiffe://cluster.local/ns/shop/sa/csr-b' });
    });

    it('an EC P-384 key', async () => {
      const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: 'O=meshgate', keys: keys as never, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } });
      const got = await refusal(t.client().sign({ csrPem: csr.toString('pem') }, bearerMetadata(await t.token('shop', 'csr-c'))));
      expect(got).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: 'ca.csr_key_type' });
    });
  });

  it('accepts RSA 2048 next to the ECDSA P-256 default', async () => {
    const ec = leafOf(await t.client().sign({ csrPem: (await workload('ecdsa-p256')).csr }, bearerMetadata(await t.token('keys', 'ec'))));
    expect(ec.publicKey.asymmetricKeyType).toBe('ec');
    const rsa = leafOf(await t.client().sign({ csrPem: (await workload('rsa-2048')).csr }, bearerMetadata(await t.token('keys', 'rsa'))));
    expect(rsa.publicKey.asymmetricKeyType).toBe('rsa');
    expect(rsa.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    const ku = new x509.X509Certificate(rsa.raw).getExtension(x509.KeyUsagesExtension)!;
    expect(ku.critical).toBe(true);
    expect(ku.usages).toBe(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
  });

  it('rate-limits per identity with RESOURCE_EXHAUSTED while another identity is still served, and refills with time', async () => {
    const w = await workload();
    const token = await t.token('limits', 'busy');
    for (let i = 0; i < 3; i++) await t.client().sign({ csrPem: w.csr }, bearerMetadata(token));
    expect(await refusal(t.client().sign({ csrPem: w.csr }, bearerMetadata(token)))).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, reason: 'ca.rate_limited' });
    const other = await t.client().sign({ csrPem: w.csr }, bearerMetadata(await t.token('limits', 'quiet')));
    expect(other.spiffeId).toBe('spiffe://cluster.local/ns/limits/sa/quiet');
    // 3 per minute: one more after 20 s.
    t.clock.advance(20_000);
    await t.client().sign({ csrPem: w.csr }, bearerMetadata(token));
    expect(await refusal(t.client().sign({ csrPem: w.csr }, bearerMetadata(token)))).toMatchObject({ reason: 'ca.rate_limited' });
  });

  describe('renewal with the current certificate and no token', () => {
    it('issues for the SPIFFE ID of the client certificate', async () => {
      const w = await workload();
      const first = await t.client().sign({ csrPem: w.csr }, bearerMetadata(await t.token('renew', 'svc')));
      const next = await workload();
      const renewed = await t.client({ keyPem: w.keyPem, chainPem: first.certChainPem.join('') }).sign({ csrPem: next.csr });
      expect(renewed.spiffeId).toBe('spiffe://cluster.local/ns/renew/sa/svc');
      expect(leafOf(renewed).subjectAltName).toBe('URI:spiffe://cluster.local/ns/renew/sa/svc');
      expect(renewed.serial).not.toBe(first.serial);
      expect((await t.audit()).at(-1)).toMatchObject({ event: 'issued', proof: 'certificate', spiffeId: renewed.spiffeId });
    });

    it('refuses a certificate from another CA', async () => {
      const other = await startTestCa();
      try {
        const w = await workload();
        const foreign = await other.client().sign({ csrPem: w.csr }, bearerMetadata(await other.token('renew', 'svc')));
        const got = await refusal(t.client({ keyPem: w.keyPem, chainPem: foreign.certChainPem.join('') }).sign({ csrPem: w.csr }));
        expect(got).toMatchObject({ code: grpc.status.UNAUTHENTICATED, reason: 'ca.token_missing' });
      } finally {
        await other.close();
      }
    });

    it('refuses a certificate that expired by the CA clock', async () => {
      const w = await workload();
      const first = await t.client().sign({ csrPem: w.csr, ttlSeconds: 60 }, bearerMetadata(await t.token('renew', 'late')));
      t.clock.advance(2 * 60_000);
      const got = await refusal(t.client({ keyPem: w.keyPem, chainPem: first.certChainPem.join('') }).sign({ csrPem: w.csr }));
      expect(got).toMatchObject({ code: grpc.status.UNAUTHENTICATED, reason: 'ca.peer_certificate' });
    });
  });

  it('counts signings by result on the admin /metrics, and is ready', async () => {
    const metrics = await request(`http://127.0.0.1:${t.ca.adminPort}/metrics`);
    const text = await metrics.body.text();
    expect(text).toMatch(/meshgate_ca_signings_total\{result="issued"\} [1-9]/);
    expect(text).toMatch(/meshgate_ca_signings_total\{result="token_expired"\} 1/);
    expect(text).toMatch(/meshgate_ca_signings_total\{result="rate_limited"\} [1-9]/);
    expect(text).toContain('meshgate_ca_signing_duration_seconds_bucket');
    const ready = await request(`http://127.0.0.1:${t.ca.adminPort}/ready`);
    expect(ready.statusCode).toBe(200);
    await ready.body.dump();
    const dump = (await (await request(`http://127.0.0.1:${t.ca.adminPort}/config_dump`)).body.json()) as Record<string, unknown>;
    expect(JSON.stringify(dump)).not.toMatch(/PRIVATE KEY/);
    expect(dump).toMatchObject({ trustDomain: 'cluster.local' });
  });
});

describe('meshgate ca: root rotation', () => {
  let oldDir: string;
  let t: TestCa;
  beforeAll(async () => {
    oldDir = await createCaMaterialDir();
    // The new root signs; both roots are in force during the overlap.
    t = await startTestCa({ overrides: { trustBundle: { files: ['trust-bundle.pem', path.join(oldDir, 'root-ca.pem')] } } });
  });
  afterAll(async () => {
    await t?.close();
    await rm(oldDir, { recursive: true, force: true });
  });

  it('serves old and new roots in the Sign reply and in GetTrustBundle', async () => {
    const oldRoot = await readFile(path.join(oldDir, 'root-ca.pem'), 'utf8');
    const newRoot = await readFile(path.join(t.dir, 'root-ca.pem'), 'utf8');
    const res = await t.client().sign({ csrPem: (await workload()).csr }, bearerMetadata(await t.token('shop', 'web')));
    expect(res.trustBundlePem).toEqual([newRoot, oldRoot]);
    expect((await t.client().getTrustBundle()).rootsPem).toEqual([newRoot, oldRoot]);
  });

  it('renews a workload whose certificate chains to the old root', async () => {
    const old = await startTestCa({ dir: oldDir });
    try {
      const w = await workload();
      const fromOld = await old.client().sign({ csrPem: w.csr }, bearerMetadata(await old.token('shop', 'legacy')));
      const renewed = await t.client({ keyPem: w.keyPem, chainPem: fromOld.certChainPem.join('') }).sign({ csrPem: w.csr });
      expect(renewed.spiffeId).toBe('spiffe://cluster.local/ns/shop/sa/legacy');
      const newRoot = new X509Certificate(await readFile(path.join(t.dir, 'root-ca.pem')));
      expect(leafOf(renewed).verify(newRoot.publicKey)).toBe(true);
    } finally {
      await old.close();
    }
  });
});

describe('meshgate ca: start-up errors are one line naming file and field', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await createCaMaterialDir();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const cases: Array<[string, (yaml: string) => string, string]> = [
    [
      'two token key sources',
      (y) => y.replace('publicKeyFile: token-signing.pub.pem', 'publicKeyFile: token-signing.pub.pem\n  jwksUri: https://example.com/jwks'),
      'tokens: expected exactly one of publicKeyFile, jwksFile, jwksUri',
    ],
    ['unknown field', (y) => `${y}\nleafs: {}\n`, 'leafs: unknown field'],
    ['ttl above maxTtl', (y) => y.replace('ttl: 24h', 'ttl: 72h'), 'leaf: ttl must not exceed maxTtl'],
    ['a signing key that does not match', (y) => y.replace('keyFile: root-ca.key', 'keyFile: token-signing.key'), 'signing.keyFile: does not match the public key of signing.certFile'],
    ['HS256 in the allow-list', (y) => y.replace('algorithms: [ES256]', 'algorithms: [HS256]'), 'tokens.algorithms[0]'],
    ['a missing trust bundle file', (y) => y.replace('files: [trust-bundle.pem]', 'files: [nope.pem]'), 'trustBundle.files[0]: cannot read nope.pem (ENOENT)'],
  ];
  it('a gRPC port in use: exit 1 and one line naming the address', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as AddressInfo).port;
      const file = path.join(dir, 'port-in-use.yaml');
      const config = parseYaml(await readFile(path.join(dir, 'ca.yaml'), 'utf8')) as Record<string, unknown>;
      await writeFile(file, stringifyYaml({ ...config, listen: { address: '127.0.0.1', port }, admin: { address: '127.0.0.1', port: 0 } }));
      const { code, stderr } = await meshgate(['ca', '--config', file]);
      expect({ code, lines: stderr.trim().split('\n') }).toEqual({ code: 1, lines: [`meshgate ca: address in use: 127.0.0.1:${port}`] });
    } finally {
      taken.close();
    }
  });

  for (const [name, edit, expected] of cases) {
    it(name, async () => {
      const file = path.join(dir, `${name.replaceAll(' ', '-')}.yaml`);
      await writeFile(file, edit(await readFile(path.join(dir, 'ca.yaml'), 'utf8')));
      const { code, stderr } = await meshgate(['ca', '--config', file]);
      expect(code).toBe(2);
      const lines = stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(file);
      expect(lines[0]).toContain(expected);
    });
  }
});

describe('meshgate certs init and meshgate token', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-certs-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the CA files with 0600 private keys, and a ca.yaml that starts a CA', async () => {
    const out = path.join(dir, 'certs');
    const { code, stdout } = await meshgate(['certs', 'init', '--out', out, '--intermediate', '--trust-domain', 'example.org']);
    expect(code).toBe(0);
    const names = ['root-ca.pem', 'root-ca.key', 'intermediate-ca.pem', 'intermediate-ca.key', 'token-signing.key', 'token-signing.pub.pem', 'trust-bundle.pem', 'ca.yaml'];
    for (const name of names) expect(stdout).toContain(path.join(out, name));
    for (const name of names.filter((n) => n.endsWith('.key'))) expect((await stat(path.join(out, name))).mode & 0o777, name).toBe(0o600);
    const t = await startTestCa({ dir: out });
    try {
      const res = await t.client().sign({ csrPem: (await workload()).csr }, bearerMetadata(await t.token('default', 'web')));
      expect(res.spiffeId).toBe('spiffe://example.org/ns/default/sa/web');
      expect(res.certChainPem).toHaveLength(2);
    } finally {
      await t.close();
    }
  });

  it('refuses to overwrite any existing file without --force (exit 2, one line naming it)', async () => {
    const out = path.join(dir, 'again');
    expect((await meshgate(['certs', 'init', '--out', out])).code).toBe(0);
    const before = await readFile(path.join(out, 'root-ca.key'), 'utf8');
    const { code, stderr } = await meshgate(['certs', 'init', '--out', out]);
    expect(code).toBe(2);
    expect(stderr.trim().split('\n')).toEqual([`meshgate certs init: ${path.join(out, 'root-ca.pem')}: already exists (use --force to overwrite)`]);
    expect(await readFile(path.join(out, 'root-ca.key'), 'utf8')).toBe(before);

    // Only one file in the way is enough to stop the run before any write.
    const lone = path.join(dir, 'lone');
    await meshgate(['certs', 'init', '--out', lone]);
    await rm(path.join(lone, 'root-ca.pem'));
    const partial = await meshgate(['certs', 'init', '--out', lone]);
    expect(partial.code).toBe(2);
    expect(partial.stderr).toContain(path.join(lone, 'root-ca.key'));

    const forced = await meshgate(['certs', 'init', '--out', out, '--force', '--key-type', 'rsa-2048']);
    expect(forced.code).toBe(0);
    expect(await readFile(path.join(out, 'root-ca.key'), 'utf8')).not.toBe(before);
    expect((await stat(path.join(out, 'root-ca.key'))).mode & 0o777).toBe(0o600);
    expect(new X509Certificate(await readFile(path.join(out, 'root-ca.pem'))).publicKey.asymmetricKeyType).toBe('rsa');
  });

  it('token prints a JWT that verifies against the written public key', async () => {
    const out = path.join(dir, 'tok');
    await meshgate(['certs', 'init', '--out', out]);
    const { code, stdout } = await meshgate(['token', '--sa', 'billing', '--ns', 'payments', '--key', path.join(out, 'token-signing.key'), '--ttl', '2h']);
    expect(code).toBe(0);
    const token = stdout.trim();
    const publicKey = await importSPKI(await readFile(path.join(out, 'token-signing.pub.pem'), 'utf8'), 'ES256');
    const { payload, protectedHeader } = await jwtVerify(token, publicKey, { issuer: 'meshgate', audience: 'meshgate-ca' });
    expect(protectedHeader.alg).toBe('ES256');
    expect(payload.sub).toBe('system:serviceaccount:payments:billing');
    expect(payload['kubernetes.io']).toEqual({ namespace: 'payments', serviceaccount: { name: 'billing' } });
    expect(payload.exp! - payload.iat!).toBe(7200);
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'ES256', typ: 'JWT' });
  });

  it('token refuses names that are not DNS labels and a missing key file', async () => {
    const bad = await meshgate(['token', '--sa', 'Web', '--ns', 'default', '--key', path.join(dir, 'certs', 'token-signing.key')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    const missing = await meshgate(['token', '--sa', 'web', '--ns', 'default', '--key', path.join(dir, 'nope.key')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('nope.key: cannot read file (no such file)');
  });

  it('every new command has --help', async () => {
    for (const command of ['ca', 'certs', 'token']) {
      const { code, stdout } = await meshgate([command, '--help']);
      expect(code).toBe(0);
      expect(stdout).toContain(`Usage: meshgate ${command}`);
    }
  });
});
