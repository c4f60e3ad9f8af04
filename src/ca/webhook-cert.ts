import { createPrivateKey, webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../core/clock.ts';
import { generateKeyPair, privateKeyToPem, x509 } from '../identity/x509.ts';
import { CERTS_INIT_FILES } from './certs-init.ts';
import { pathExists, refuseExisting, writeMaterial } from './material-files.ts';

/*
 * `meshgate certs webhook`: the injector's HTTPS serving certificate, signed by
 * the CA in a `meshgate certs init` folder (its intermediate when there is
 * one). The API server checks it against the MutatingWebhookConfiguration's
 * caBundle, which is then that folder's trust-bundle.pem. Workload
 * certificates carry a SPIFFE ID only; this one carries the DNS names of the
 * webhook Service, which is why it is made here and not by `meshgate ca`.
 */

const WEBHOOK_CERT_FILES = { cert: 'injector.pem', key: 'injector.key' } as const;

export interface WebhookCertOptions {
  /** A `meshgate certs init` folder; the files are written there too. */
  readonly dir: string;
  readonly service: string;
  readonly namespace: string;
  readonly ttlMs: number;
  readonly force: boolean;
  readonly clock: Clock;
}

export class WebhookCertError extends Error {
  override readonly name = 'WebhookCertError';
}

/** The names the API server may dial: `<service>.<namespace>.svc` is the one it uses. */
function webhookDnsNames(service: string, namespace: string): string[] {
  return [service, `${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`];
}

export async function writeWebhookCert(opts: WebhookCertOptions): Promise<string[]> {
  const files = [path.join(opts.dir, WEBHOOK_CERT_FILES.cert), path.join(opts.dir, WEBHOOK_CERT_FILES.key)];
  await refuseExisting(files, opts.force);
  const intermediate = await pathExists(path.join(opts.dir, CERTS_INIT_FILES.intermediateCert));
  const signerName = intermediate ? 'intermediate-ca' : 'root-ca';
  const signerCertPem = await readSigner(opts.dir, `${signerName}.pem`);
  const signerKeyPem = await readSigner(opts.dir, `${signerName}.key`);
  const signerCert = new x509.X509Certificate(signerCertPem);
  const keyObject = createPrivateKey(signerKeyPem);
  const isEc = keyObject.asymmetricKeyType === 'ec';
  const alg = isEc ? { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  const signingKey = await webcrypto.subtle.importKey('pkcs8', keyObject.export({ format: 'der', type: 'pkcs8' }), alg, false, ['sign']);

  const now = opts.clock.now();
  const notAfter = Math.min(now + opts.ttlMs, signerCert.notAfter.getTime());
  const keys = await generateKeyPair('ecdsa-p256');
  const names = webhookDnsNames(opts.service, opts.namespace);
  const cert = await x509.X509CertificateGenerator.create({
    subject: `CN=${names[2]}, O=meshgate`,
    issuer: signerCert.subjectName,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(notAfter),
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: alg,
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
      .toString('hex')
      .replace(/^[89a-f]/, '7'),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension(
        names.map((value) => ({ type: 'dns' as const, value })),
        false,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(signerCert, false),
    ],
  });
  // The chain the TLS server sends: the leaf, then the intermediate; the root stays in the caBundle.
  const chain = `${cert.toString('pem')}\n${intermediate ? `${signerCertPem.trim()}\n` : ''}`;
  await writeMaterial(files[0]!, chain, false, opts.force);
  await writeMaterial(files[1]!, await privateKeyToPem(keys.privateKey), true, opts.force);
  return files;
}

async function readSigner(dir: string, name: string): Promise<string> {
  try {
    return await readFile(path.join(dir, name), 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new WebhookCertError(`${path.join(dir, name)}: cannot read (${code === 'ENOENT' ? 'no such file; run `meshgate certs init` first' : (code ?? String(err))})`);
  }
}
