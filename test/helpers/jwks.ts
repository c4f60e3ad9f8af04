import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { JWTPayload } from 'jose';
import { startHttpServer } from './servers.ts';

/** An identity provider for e2e tests: an ES256 key (kid `e2e`), its JWKS served at `${url}/jwks`, and a signer. */
export interface TestIdp {
  /** Base URL of the JWKS server; the key set is at `${url}/jwks` (any path answers). */
  readonly url: string;
  /** A token with `claims` signed by the served key. */
  sign(claims: JWTPayload): Promise<string>;
  close(): Promise<void>;
}

export async function startTestIdp(): Promise<TestIdp> {
  const pair = await generateKeyPair('ES256');
  const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'e2e', use: 'sig' };
  const server = await startHttpServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: [publicJwk] }));
  });
  return {
    url: server.url,
    sign: (claims) => new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'e2e' }).sign(pair.privateKey),
    close: () => server.close(),
  };
}
