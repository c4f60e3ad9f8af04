import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { CryptoKey } from 'jose';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { request } from 'undici';
import { parse as parseYaml, stringify } from 'yaml';
import { mintToken } from '../../src/ca/token-mint.ts';
import { systemClock } from '../../src/core/clock.ts';
import { waitForHttpOk } from './http-probe.ts';
import type { Child, ProcessGroup } from './processes.ts';
import { freePorts } from './processes.ts';

/*
 * The soak's mesh, built from the real parts as the e2e tests are: a CA
 * (`meshgate certs init` material, `meshgate ca`), a policy server watching a
 * folder, and three sidecars, every one a child process of the real CLI so its
 * resident size and open files can be read from /proc. Calls go
 * client -> frontend sidecar (outbound) -> mTLS -> orders or echo sidecar
 * (inbound) -> app: an HTTP app (orders) and a gRPC app (echo), both here.
 * Certificates live 2 minutes and renew at half-life: each sidecar rotates
 * about once a minute.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'bin', 'meshgate.js');
const NS = 'shop';
const ISSUER = 'https://soak-idp.example';
/** Requests per second per caller on /limited (the RateLimitPolicy in force). */
export const LIMITED_PER_SECOND = 5;
const START_TIMEOUT_MS = 60_000;

interface SoakSidecar {
  readonly name: string;
  readonly child: Child;
  readonly pid: number;
  readonly outbound: number;
  readonly inbound: number;
  readonly admin: number;
}

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

async function spawnRole(group: ProcessGroup, name: string, role: string, configFile: string, adminPort: number): Promise<Child> {
  const child = group.spawn({ name, command: process.execPath, args: [CLI, role, '--config', configFile], cwd: ROOT });
  const live = await waitForHttpOk(child, `http://127.0.0.1:${adminPort}/live`, START_TIMEOUT_MS);
  if (!live.ok) throw new Error(`${name}: ${live.reason}\n${child.stderr().slice(-2000)}`);
  return child;
}

/** Polls /ready until 200 (a sidecar needs its certificate, its policy and its app). */
async function untilReady(name: string, adminPort: number): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await request(`http://127.0.0.1:${adminPort}/ready`, { signal: AbortSignal.timeout(2000) });
      last = await res.body.text();
      if (res.statusCode === 200) return;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`${name}: /ready not 200 within ${START_TIMEOUT_MS} ms: ${last}`);
}

export async function startSoakMesh(group: ProcessGroup, log: (line: string) => void): Promise<SoakMesh> {
  const dir = group.tempDir('meshgate-soak-');
  const caDir = join(dir, 'ca');
  const made = spawnSync(process.execPath, [CLI, 'certs', 'init', '--out', caDir, '--intermediate'], { cwd: ROOT, encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`certs init: ${made.stderr}`);
  const [caPort, caAdmin, psPort, psAdmin] = (await freePorts(4)) as [number, number, number, number];

  const caConfig = {
    ...(parseYaml(readFileSync(join(caDir, 'ca.yaml'), 'utf8')) as object),
    listen: { address: '127.0.0.1', port: caPort },
    admin: { address: '127.0.0.1', port: caAdmin },
    leaf: { ttl: '2m', maxTtl: '1h', keyTypes: ['ecdsa-p256'] },
    rateLimit: { perIdentity: { requests: 1000, window: '1m' } },
    log: { level: 'warn' },
  };
  writeFileSync(join(caDir, 'ca-soak.yaml'), stringify(caConfig));
  const ca = await spawnRole(group, 'ca', 'ca', join(caDir, 'ca-soak.yaml'), caAdmin);
  log(`ca: 127.0.0.1:${caPort} (pid ${ca.process.pid})`);

  const signingKey = readFileSync(join(caDir, 'token-signing.key'), 'utf8');
  const writeToken = async (ns: string, sa: string): Promise<string> => {
    const file = join(dir, `${ns}-${sa}.token`);
    writeFileSync(file, await mintToken({ keyPem: signingKey, namespace: ns, serviceAccount: sa, ttlMs: 24 * 3_600_000, issuer: 'meshgate', audience: 'meshgate-ca', clock: systemClock }), {
      mode: 0o600,
    });
    return file;
  };
  const identity = async (sa: string, ns = NS) => ({
    trustDomain: 'cluster.local',
    ca: { address: `127.0.0.1:${caPort}`, trustBundleFile: join(caDir, 'trust-bundle.pem'), serverName: 'localhost' },
    tokenFile: await writeToken(ns, sa),
  });

  // The IdP: an ES256 key whose public half is inline in the RequestAuthentication.
  const idp = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(idp.publicKey)), kid: 'soak', alg: 'ES256', use: 'sig' };
  const folder = join(dir, 'policies');
  mkdirSync(join(folder, NS), { recursive: true });
  writeFileSync(join(folder, NS, 'soak.yaml'), policies(jwk));
  writeFileSync(join(folder, NS, 'soak-push.yaml'), pushedPolicy(0));

  const psConfigFile = join(dir, 'policy-server.yaml');
  writeFileSync(
    psConfigFile,
    stringify({
      identity: await identity('policy-server', 'meshgate-system'),
      listen: { address: '127.0.0.1', port: psPort },
      admin: { address: '127.0.0.1', port: psAdmin },
      policies: { folder },
      registry: { shared: { enabled: false } },
      adminApi: { audit: { file: join(dir, 'policy-audit.jsonl') } },
      log: { level: 'warn' },
    }),
  );
  const policyServer = await spawnRole(group, 'policy-server', 'policy-server', psConfigFile, psAdmin);
  log(`policy server: 127.0.0.1:${psPort} (pid ${policyServer.process.pid})`);

  const [orders, echo] = await Promise.all([startOrdersApp(), startEchoApp()]);
  const sidecars: SoakSidecar[] = [];
  const startSidecar = async (name: string, app: string, appProtocol: 'auto' | 'http2'): Promise<SoakSidecar> => {
    const [outbound, inbound, admin] = (await freePorts(3)) as [number, number, number];
    const file = join(dir, `${name}.yaml`);
    writeFileSync(
      file,
      stringify({
        workload: { service: name, namespace: NS },
        listeners: { outbound: { address: '127.0.0.1', port: outbound }, inbound: { address: '127.0.0.1', port: inbound }, admin: { address: '127.0.0.1', port: admin } },
        inbound: { app, appProtocol },
        mtls: { mode: 'STRICT' },
        identity: { ...(await identity(name)), ttl: '2m', renewFraction: 0.5 },
        policy: { servers: [`127.0.0.1:${psPort}`], stateDir: join(dir, `state-${name}`) },
        log: { level: 'warn', accessLog: false },
      }),
    );
    const child = await spawnRole(group, name, 'sidecar', file, admin);
    const sidecar = { name, child, pid: child.process.pid!, outbound, inbound, admin };
    sidecars.push(sidecar);
    log(`sidecar ${name}: outbound :${outbound} inbound :${inbound} admin :${admin} (pid ${sidecar.pid})`);
    return sidecar;
  };
  await startSidecar('orders', `http://127.0.0.1:${orders.port}`, 'auto');
  await startSidecar('echo', `http://127.0.0.1:${echo.port}`, 'http2');
  // frontend's own app is never called; orders' app stands in so /ready can check one.
  const frontend = await startSidecar('frontend', `http://127.0.0.1:${orders.port}`, 'auto');
  await Promise.all(sidecars.map((s) => untilReady(s.name, s.admin)));

  return {
    sidecars,
    frontend,
    controlPlane: [ca, policyServer],
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
