import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify } from 'yaml';
import { mintToken } from '../../src/ca/token-mint.ts';
import { systemClock } from '../../src/core/clock.ts';
import { waitForHttpOk } from './http-probe.ts';
import type { Child, ProcessGroup } from './processes.ts';
import { freePorts } from './processes.ts';

/*
 * The real parts of a mesh, each a child process of the real CLI as the e2e
 * tests build it: `meshgate certs init` material, `meshgate ca`, a policy
 * server watching a folder, and sidecars (mTLS STRICT, certificates from the
 * CA, policy and registry from the server). The soak (lib/soak-mesh.ts) and
 * bench:mesh (lib/mesh-targets.ts) assemble their meshes from these.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Which checkout's `bin/meshgate.js` runs the parts: this one unless another is named (bench:pair's baseline). */
export interface MeshCheckout {
  readonly root: string;
}

const THIS_CHECKOUT: MeshCheckout = { root: ROOT };
const cliOf = (checkout: MeshCheckout): string => join(checkout.root, 'bin', 'meshgate.js');
const TRUST_DOMAIN = 'cluster.local';

export interface ControlPlaneOptions {
  /** Lifetime of the leaf certificates the CA issues, and the most a sidecar may ask for. */
  readonly leafTtl: string;
  readonly maxLeafTtl: string;
  /** Files of the policy folder: path relative to it -> YAML text. */
  readonly policyFiles: Readonly<Record<string, string>>;
  /** How long each process has to answer /live (or a sidecar /ready). */
  readonly startTimeoutMs: number;
  readonly log: (line: string) => void;
  /** Default: this checkout. */
  readonly checkout?: MeshCheckout;
}

export interface ControlPlane {
  /** The temp dir holding the CA material, tokens, configs and the policy folder. */
  readonly dir: string;
  readonly folder: string;
  readonly ca: Child;
  readonly policyServer: Child;
  readonly policyServerPort: number;
  readonly startTimeoutMs: number;
  readonly checkout: MeshCheckout;
  /** The `identity` section of a sidecar config for namespace/serviceAccount, with a fresh bootstrap token file. */
  identity(serviceAccount: string, namespace: string): Promise<Record<string, unknown>>;
}

async function spawnRole(group: ProcessGroup, checkout: MeshCheckout, name: string, role: string, configFile: string, adminPort: number, startTimeoutMs: number): Promise<Child> {
  const child = group.spawn({ name, command: process.execPath, args: [cliOf(checkout), role, '--config', configFile], cwd: checkout.root, pipeStdout: true });
  const live = await waitForHttpOk(child, `http://127.0.0.1:${adminPort}/live`, startTimeoutMs);
  if (!live.ok) throw new Error(`${name}: ${live.reason}\n${child.stderr().slice(-2000)}`);
  return child;
}

/** CA material, `meshgate ca` and `meshgate policy-server` on a folder holding `policyFiles`, on free loopback ports. */
export async function startControlPlane(group: ProcessGroup, options: ControlPlaneOptions): Promise<ControlPlane> {
  const checkout = options.checkout ?? THIS_CHECKOUT;
  const dir = group.tempDir('meshgate-mesh-');
  const caDir = join(dir, 'ca');
  const made = spawnSync(process.execPath, [cliOf(checkout), 'certs', 'init', '--out', caDir, '--intermediate'], { cwd: checkout.root, encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`certs init: ${made.stderr}`);
  const [caPort, caAdmin, psPort, psAdmin] = (await freePorts(4)) as [number, number, number, number];

  const caConfig = {
    ...(parseYaml(readFileSync(join(caDir, 'ca.yaml'), 'utf8')) as object),
    listen: { address: '127.0.0.1', port: caPort },
    admin: { address: '127.0.0.1', port: caAdmin },
    leaf: { ttl: options.leafTtl, maxTtl: options.maxLeafTtl, keyTypes: ['ecdsa-p256'] },
    rateLimit: { perIdentity: { requests: 1000, window: '1m' } },
    log: { level: 'warn' },
  };
  writeFileSync(join(caDir, 'ca-mesh.yaml'), stringify(caConfig));
  const ca = await spawnRole(group, checkout, 'ca', 'ca', join(caDir, 'ca-mesh.yaml'), caAdmin, options.startTimeoutMs);
  options.log(`ca: 127.0.0.1:${caPort} (pid ${ca.process.pid})`);

  const signingKey = readFileSync(join(caDir, 'token-signing.key'), 'utf8');
  const writeToken = async (namespace: string, serviceAccount: string): Promise<string> => {
    const file = join(dir, `${namespace}-${serviceAccount}.token`);
    const token = await mintToken({ keyPem: signingKey, namespace, serviceAccount, ttlMs: 24 * 3_600_000, issuer: 'meshgate', audience: 'meshgate-ca', clock: systemClock });
    writeFileSync(file, token, { mode: 0o600 });
    return file;
  };
  const identity = async (serviceAccount: string, namespace: string): Promise<Record<string, unknown>> => ({
    trustDomain: TRUST_DOMAIN,
    ca: { address: `127.0.0.1:${caPort}`, trustBundleFile: join(caDir, 'trust-bundle.pem'), serverName: 'localhost' },
    tokenFile: await writeToken(namespace, serviceAccount),
  });

  const folder = join(dir, 'policies');
  mkdirSync(folder, { recursive: true });
  for (const [file, text] of Object.entries(options.policyFiles)) {
    mkdirSync(dirname(join(folder, file)), { recursive: true });
    writeFileSync(join(folder, file), text);
  }

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
  const policyServer = await spawnRole(group, checkout, 'policy-server', 'policy-server', psConfigFile, psAdmin, options.startTimeoutMs);
  options.log(`policy server: 127.0.0.1:${psPort} (pid ${policyServer.process.pid})`);
  return { dir, folder, ca, policyServer, policyServerPort: psPort, startTimeoutMs: options.startTimeoutMs, checkout, identity };
}

export interface MeshSidecarOptions {
  /** Service and service account. */
  readonly name: string;
  readonly namespace: string;
  /** URL of the sidecar's local app. */
  readonly app: string;
  readonly appProtocol: 'auto' | 'http2';
  /** More `identity` fields (ttl, renewFraction). */
  readonly identity?: Readonly<Record<string, unknown>>;
  /** Top-level sections replacing the generated ones (log, telemetry). */
  readonly extra?: Readonly<Record<string, unknown>>;
  /**
   * A state dir of its own, as a new pod has: a sidecar started again on the same one boots from the
   * snapshot the last one saved, whose registry may still name endpoints that are gone.
   */
  readonly freshState?: boolean;
}

export interface MeshSidecar {
  readonly name: string;
  readonly child: Child;
  readonly pid: number;
  readonly outbound: number;
  readonly inbound: number;
  readonly admin: number;
  /** From spawning the process to its first 200 on /ready (certificate, policy snapshot and app), polled every 5 ms. */
  readonly readyMs: number;
}

/** Polled often, so the start-up time is measured to a few milliseconds; a refused connection costs the sidecar nothing. */
const READY_POLL_MS = 5;

/** One sidecar (mTLS STRICT, policy from the control plane), resolved once /ready answers 200. */
export async function startMeshSidecar(group: ProcessGroup, plane: ControlPlane, options: MeshSidecarOptions): Promise<MeshSidecar> {
  const { name, namespace } = options;
  const [outbound, inbound, admin] = (await freePorts(3)) as [number, number, number];
  const file = join(plane.dir, `${namespace}-${name}.yaml`);
  writeFileSync(
    file,
    stringify({
      workload: { service: name, namespace },
      listeners: { outbound: { address: '127.0.0.1', port: outbound }, inbound: { address: '127.0.0.1', port: inbound }, admin: { address: '127.0.0.1', port: admin } },
      inbound: { app: options.app, appProtocol: options.appProtocol },
      mtls: { mode: 'STRICT' },
      identity: { ...(await plane.identity(name, namespace)), ...options.identity },
      policy: {
        servers: [`127.0.0.1:${plane.policyServerPort}`],
        stateDir: options.freshState ? mkdtempSync(join(plane.dir, `state-${namespace}-${name}-`)) : join(plane.dir, `state-${namespace}-${name}`),
      },
      log: { level: 'warn', accessLog: false },
      ...options.extra,
    }),
  );
  const spawnedAt = performance.now();
  const child = group.spawn({ name, command: process.execPath, args: [cliOf(plane.checkout), 'sidecar', '--config', file], cwd: plane.checkout.root, pipeStdout: true });
  const ready = await waitForHttpOk(child, `http://127.0.0.1:${admin}/ready`, plane.startTimeoutMs, READY_POLL_MS);
  const readyMs = performance.now() - spawnedAt;
  if (!ready.ok) throw new Error(`${name}: ${ready.reason}\n${child.stderr().slice(-2000)}`);
  return { name, child, pid: child.process.pid!, outbound, inbound, admin, readyMs };
}
