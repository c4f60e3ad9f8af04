import { readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { CryptoKey } from 'jose';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { request } from 'undici';
import type { MeshSidecar } from './mesh-parts.ts';
import { startControlPlane, startMeshSidecar } from './mesh-parts.ts';
import type { Child, ProcessGroup } from './processes.ts';

/*
 * The soak's mesh, built from the real parts (lib/mesh-parts.ts) as the e2e
 * tests are: a CA (`meshgate certs init` material, `meshgate ca`), a policy
 * server watching a folder, and three sidecars, every one a child process of the real CLI so its
 * resident size and open files can be read from /proc. Calls go
 * client -> frontend sidecar (outbound) -> mTLS -> orders or echo sidecar
 * (inbound) -> app: an HTTP app (orders) and a gRPC app (echo), both here.
 * Certificates live 2 minutes and renew at half-life: each sidecar rotates
 * about once a minute.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const NS = 'shop';
const ISSUER = 'https://soak-idp.example';
/** Requests per second per caller on /limited (the RateLimitPolicy in force). */
export const LIMITED_PER_SECOND = 5;
const START_TIMEOUT_MS = 60_000;

type SoakSidecar = MeshSidecar;

export interface EchoClient extends grpc.Client {
  Unary(req: { message: string }, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: { message: string }) => void): grpc.ClientUnaryCall;
  ServerStream(req: { message: string; count: number }, md: grpc.Metadata, opts: grpc.CallOptions): grpc.ClientReadableStream<{ message: string }>;
}

export interface SoakMesh {
  readonly sidecars: readonly SoakSidecar[];
  readonly frontend: SoakSidecar;
  /** Processes of the control plane, watched for crashes. */
  readonly controlPlane: readonly Child[];
  /** A JWT of the soak IdP for the frontend's end user, valid for an hour from now. */
  token(): Promise<string>;
  /** A gRPC client of the echo service through the frontend's outbound listener. */
  echoClient(): EchoClient;
  /** Rewrites one policy file; returns the generation written. */
  pushPolicy(generation: number): void;
  close(): Promise<void>;
}

const EchoService = (() => {
  const definition = protoLoader.loadSync(join(ROOT, 'test/fixtures/echo.proto'), { defaults: true, keepCase: true });
  return (grpc.loadPackageDefinition(definition) as unknown as { meshgate: { test: { Echo: grpc.ServiceClientConstructor } } }).meshgate.test.Echo;
})();

function policies(jwk: object): string {
  const frontend = `spiffe://cluster.local/ns/${NS}/sa/frontend`;
  return `apiVersion: meshgate.dev/v1
kind: RequestAuthentication
metadata: { name: soak-jwt, namespace: ${NS} }
spec:
  selector: { services: [orders, echo] }
  jwtRules:
    - { name: idp, issuer: "${ISSUER}", audiences: [orders], algorithms: [ES256], jwks: { keys: [${JSON.stringify(jwk)}] } }
---
apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: soak-allow, namespace: ${NS} }
spec:
  selector: { services: [orders, echo] }
  rules:
    - name: frontend-users
      from: [{ principals: ["${frontend}"], requestPrincipals: ["${ISSUER}/*"] }]
---
apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: soak-deny, namespace: ${NS} }
spec:
  selector: { services: [orders, echo] }
  action: DENY
  rules:
    - name: admin
      to: [{ paths: ["/admin*", "/meshgate.test.Echo/ServerStream"] }]
---
apiVersion: meshgate.dev/v1
kind: RateLimitPolicy
metadata: { name: soak-limit, namespace: ${NS} }
spec:
  selector: { services: [orders] }
  rules:
    - name: limited
      match: { paths: ["/limited*"] }
      key: [source.principal]
      limit: { requests: ${LIMITED_PER_SECOND}, per: 1s }
      burst: ${LIMITED_PER_SECOND}
`;
}

/**
 * The document the soak rewrites every minute: a DENY on a path no call uses,
 * so expected outcomes stay put, and no selector, so every sidecar gets a new
 * snapshot version.
 */
function pushedPolicy(generation: number): string {
  return `apiVersion: meshgate.dev/v1
kind: AuthorizationPolicy
metadata: { name: soak-push, namespace: ${NS} }
spec:
  action: DENY
  rules:
    - name: generation-${generation}
      to: [{ paths: ["/never-called/${generation}"] }]
`;
}

async function startOrdersApp(): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ service: 'orders', path: req.url }));
    });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function startEchoApp(): Promise<{ port: number; close(): Promise<void> }> {
  const server = new grpc.Server();
  server.addService(EchoService.service, {
    Unary(call: grpc.ServerUnaryCall<{ message: string }, { message: string; seq: number }>, callback: grpc.sendUnaryData<{ message: string; seq: number }>) {
      callback(null, { message: call.request.message, seq: 0 });
    },
    ServerStream(call: grpc.ServerWritableStream<{ message: string; count: number }, { message: string; seq: number }>) {
      for (let seq = 0; seq < call.request.count; seq++) call.write({ message: call.request.message, seq });
      call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { port, close: () => new Promise((resolve) => server.tryShutdown(() => resolve())) };
}

export async function startSoakMesh(group: ProcessGroup, log: (line: string) => void): Promise<SoakMesh> {
  // The IdP: an ES256 key whose public half is inline in the RequestAuthentication.
  const idp = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(idp.publicKey)), kid: 'soak', alg: 'ES256', use: 'sig' };
  const plane = await startControlPlane(group, {
    leafTtl: '2m',
    maxLeafTtl: '1h',
    policyFiles: { [`${NS}/soak.yaml`]: policies(jwk), [`${NS}/soak-push.yaml`]: pushedPolicy(0) },
    startTimeoutMs: START_TIMEOUT_MS,
    log,
  });
  const folder = plane.folder;

  const [orders, echo] = await Promise.all([startOrdersApp(), startEchoApp()]);
  const sidecars: SoakSidecar[] = [];
  const startSidecar = async (name: string, app: string, appProtocol: 'auto' | 'http2'): Promise<SoakSidecar> => {
    const sidecar = await startMeshSidecar(group, plane, { name, namespace: NS, app, appProtocol, identity: { ttl: '2m', renewFraction: 0.5 } });
    sidecars.push(sidecar);
    log(`sidecar ${name}: outbound :${sidecar.outbound} inbound :${sidecar.inbound} admin :${sidecar.admin} (pid ${sidecar.pid})`);
    return sidecar;
  };
  await startSidecar('orders', `http://127.0.0.1:${orders.port}`, 'auto');
  await startSidecar('echo', `http://127.0.0.1:${echo.port}`, 'http2');
  // frontend's own app is never called; orders' app stands in so /ready can check one.
  const frontend = await startSidecar('frontend', `http://127.0.0.1:${orders.port}`, 'auto');

  return {
    sidecars,
    frontend,
    controlPlane: [plane.ca, plane.policyServer],
    token: () =>
      new SignJWT({ sub: 'soak-user', aud: 'orders' })
        .setProtectedHeader({ alg: 'ES256', kid: 'soak' })
        .setIssuer(ISSUER)
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(idp.privateKey as CryptoKey),
    echoClient: () => new EchoService(`127.0.0.1:${frontend.outbound}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'echo' }) as unknown as EchoClient,
    pushPolicy(generation) {
      // Written aside and renamed, as an editor or a ConfigMap update would: the server never reads half a file.
      const target = join(folder, NS, 'soak-push.yaml');
      writeFileSync(`${target}.tmp`, pushedPolicy(generation));
      renameSync(`${target}.tmp`, target);
    },
    async close() {
      await group.stopAll(5000);
      await orders.close();
      await echo.close();
    },
  };
}

/** Resident size (KiB) and open file descriptors of a process, from /proc. */
export function processFootprint(pid: number): { rssKiB: number; fds: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssKiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? Number.NaN);
    return { rssKiB, fds: readdirSync(`/proc/${pid}/fd`).length };
  } catch {
    return undefined;
  }
}

/** Certificate serial and policy version a sidecar reports in /config_dump. */
export async function sidecarState(adminPort: number): Promise<{ serial?: string; renewals?: number; policyVersion?: string }> {
  try {
    const res = await request(`http://127.0.0.1:${adminPort}/config_dump`, { signal: AbortSignal.timeout(2000) });
    const dump = (await res.body.json()) as { certificate?: { serial?: string; renewals?: number }; policy?: { version?: string } };
    return { serial: dump.certificate?.serial, renewals: dump.certificate?.renewals, policyVersion: dump.policy?.version };
  } catch {
    return {};
  }
}
