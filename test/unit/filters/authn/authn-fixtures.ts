import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CryptoKey, JWK, JWTPayload } from 'jose';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import type { CallContext } from '../../../../src/core/call-context.ts';
import type { PolicyDocument } from '../../../../src/policy/types.ts';
import { callContext } from '../../../helpers/call-context.ts';
import { doc, validDocument } from '../../policy/helpers.ts';

export const ISSUER = 'https://idp.example';
export const AUDIENCE = 'orders';

export interface TestKey {
  readonly kid: string;
  readonly alg: 'RS256' | 'ES256';
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
  readonly publicPem: string;
}

/** A fresh key pair, made at test start (no key is committed). */
export async function makeKey(kid: string, alg: 'RS256' | 'ES256' = 'RS256'): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }, publicPem: await exportSPKI(publicKey) };
}

export interface MintOptions {
  readonly key: TestKey;
  /** Seconds since the epoch: the test's clock. */
  readonly now: number;
  readonly iss?: string;
  readonly sub?: string;
  readonly aud?: string | string[];
  readonly exp?: number | null;
  readonly nbf?: number;
  readonly kid?: string | null;
  readonly header?: Record<string, unknown>;
  readonly claims?: JWTPayload;
}

/** A signed JWT; `exp: null` leaves exp out, `kid: null` leaves the kid out. */
export async function mint(o: MintOptions): Promise<string> {
  const payload: JWTPayload = {
    iss: o.iss ?? ISSUER,
    sub: o.sub ?? 'alice',
    aud: o.aud ?? AUDIENCE,
    iat: o.now,
    ...(o.exp === null ? {} : { exp: o.exp ?? o.now + 300 }),
    ...(o.nbf !== undefined ? { nbf: o.nbf } : {}),
    ...o.claims,
  };
  const kid = o.kid === null ? undefined : (o.kid ?? o.key.kid);
  return new SignJWT(payload).setProtectedHeader({ alg: o.key.alg, ...(kid ? { kid } : {}), ...o.header }).sign(o.key.privateKey);
}

export function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

export interface JsonServer {
  readonly url: string;
  readonly hits: () => number;
  /** What the next requests get. */
  set(handler: http.RequestListener): void;
  close(): Promise<void>;
}

/** A real HTTP server on 127.0.0.1, port 0, whose behaviour a test swaps. */
export async function startJsonServer(handler: http.RequestListener): Promise<JsonServer> {
  let current = handler;
  let hits = 0;
  const server = http.createServer((req, res) => {
    hits++;
    current(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits: () => hits,
    set(h) {
      current = h;
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function json(status: number, body: unknown): http.RequestListener {
  return (_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
}

export function jwksOf(...keys: TestKey[]): http.RequestListener {
  return json(200, { keys: keys.map((k) => k.publicJwk) });
}

/** A port nothing listens on: connection refused. */
export async function deadUrl(): Promise<string> {
  const s = await startJsonServer(json(200, {}));
  await s.close();
  return s.url;
}

export function authnDoc(spec: string, name = 'users'): PolicyDocument {
  return validDocument(doc('RequestAuthentication', spec, `{ name: ${name}, namespace: shop }`));
}

export function makeCall(over: { headers?: Record<string, string>; query?: string } = {}): CallContext {
  return callContext({ query: over.query ?? '', headers: over.headers ?? {} });
}
