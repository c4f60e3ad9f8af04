import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { JWTPayload } from 'jose';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { generateKeyPair as generateCertKeys, privateKeyToPem, x509 } from '../../src/identity/x509.ts';
import { startHttpServer } from './servers.ts';

/** An identity provider for e2e tests: an ES256 key (kid `e2e`), its JWKS served at `${url}/jwks`, and a signer. */
export interface TestIdp {
  /** Base URL of the JWKS server; the key set is at `${url}/jwks` (any path answers). */
  readonly url: string;
  /** A token with `claims` signed by the served key; `header` adds protected header members (e.g. `crit`). */
  sign(claims: JWTPayload, header?: Record<string, unknown>): Promise<string>;
  /** With `tls`: the PEM certificate the server presents (self-signed, for 127.0.0.1), to trust. */
  readonly caPem?: string;
  /** JWKS requests answered so far (also those refused for their bearer token). */
  fetches(): number;
  close(): Promise<void>;
}

export interface TestIdpOptions {
  /** Signature algorithm of the key; default ES256. A Kubernetes API server signs RS256. */
  readonly alg?: 'ES256' | 'RS256';
  readonly kid?: string;
  /** Serve over HTTPS with a self-signed certificate for 127.0.0.1, as the API server serves its keys. */
  readonly tls?: boolean;
  /** Answer 401 unless the request carries `authorization: Bearer <bearer>`. */
  readonly bearer?: string;
}

export async function startTestIdp(opts: TestIdpOptions = {}): Promise<TestIdp> {
  const alg = opts.alg ?? 'ES256';
  const kid = opts.kid ?? 'e2e';
  const pair = await generateKeyPair(alg);
  const publicJwk = { ...(await exportJWK(pair.publicKey)), kid, use: 'sig', alg };
  let fetches = 0;
  const handler = (req: { headers: Record<string, string | string[] | undefined> }, res: import('node:http').ServerResponse): void => {
    fetches++;
    if (opts.bearer !== undefined && req.headers.authorization !== `Bearer ${opts.bearer}`) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{"kind":"Status","status":"Failure","reason":"Unauthorized","code":401}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: [publicJwk] }));
  };
  const sign = (claims: JWTPayload, header: Record<string, unknown> = {}): Promise<string> =>
    new SignJWT(claims)
      .setProtectedHeader({ ...header, alg, kid })
      // jose refuses to sign a `crit` it does not know: tell it these are understood (the verifier is what a test exercises).
      .sign(pair.privateKey, Array.isArray(header.crit) ? { crit: Object.fromEntries(header.crit.map((name: string) => [name, true])) } : undefined);
  if (!opts.tls) {
    const server = await startHttpServer(handler);
    return { url: server.url, sign, fetches: () => fetches, close: () => server.close() };
  }
  const keys = await generateCertKeys('ecdsa-p256');
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=kubernetes',
    keys,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: 'ip', value: '127.0.0.1' },
        { type: 'dns', value: 'localhost' },
      ]),
    ],
  });
  const caPem = cert.toString('pem');
  const server = https.createServer({ cert: caPem, key: await privateKeyToPem(keys.privateKey) }, handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sign,
    caPem,
    fetches: () => fetches,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
