import { randomUUID } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { injectorConfigSchema } from '../../src/config/injector-schema.ts';
import { PATHS } from '../../src/inject/annotations.ts';
import { injectPod } from '../../src/inject/pod-injection.ts';
import { SIDECAR_READY_PATH } from '../../src/inject/pod-parts.ts';
import type { TestCa } from '../helpers/ca-fixture.ts';
import { createCaMaterialDir, startTestCa } from '../helpers/ca-fixture.ts';
import { eventually } from '../helpers/eventually.ts';
import type { TestIdp } from '../helpers/jwks.ts';
import { startTestIdp } from '../helpers/jwks.ts';
import { freePort } from '../helpers/process.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';

/*
 * An injected pod without the cluster: the sidecar config the injector writes
 * into a pod's annotations, with the files the kubelet would project (the
 * config and trust bundle from those annotations, a projected service-account
 * token signed by the "API server"), starts a sidecar that gets its SPIFFE
 * certificate from a CA verifying that token against the cluster's JWKS, and
 * passes the startup probe while its app is not up yet.
 */

const ISSUER = 'https://kubernetes.default.svc.cluster.local';

describe('a pod injected by meshgate, run on loopback', () => {
  let idp: TestIdp;
  let ca: TestCa;
  let dir: string;
  let sidecar: TestSidecar | undefined;

  beforeAll(async () => {
    idp = await startTestIdp({ alg: 'RS256', tls: true, bearer: 'ca-own-token' });
    dir = await createCaMaterialDir();
    await writeFile(path.join(dir, 'cluster-ca.crt'), idp.caPem!);
    await writeFile(path.join(dir, 'ca-token'), 'ca-own-token');
    ca = await startTestCa({
      dir,
      overrides: { tokens: { issuers: [ISSUER], jwksUri: `${idp.url}/openid/v1/jwks`, jwksCaFile: 'cluster-ca.crt', jwksTokenFile: 'ca-token', algorithms: ['RS256'] } },
    });
  });
  afterAll(async () => {
    await sidecar?.drain(200);
    await ca?.close();
    await idp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('gets spiffe://cluster.local/ns/shop/sa/orders with its projected token and is ready for the app to start', async () => {
    const config = injectorConfigSchema.parse({ mesh: { ca: { address: ca.address }, policyServers: [] } });
    const appPort = await freePort(); // nothing listens there: the app has not started
    const outcome = injectPod(
      {
        metadata: { labels: { app: 'orders' } },
        spec: { serviceAccountName: 'orders', containers: [{ name: 'orders', image: 'orders:1', ports: [{ containerPort: appPort }] }] },
        namespace: 'shop',
      },
      { config, trustBundlePem: await readFile(path.join(dir, 'trust-bundle.pem'), 'utf8') },
    );
    if (outcome.status !== 'injected') throw new Error(JSON.stringify(outcome));
    const annotations = outcome.changes.find((c) => c.path[1] === 'annotations')!.value as Record<string, string>;

    // What the kubelet projects: the two annotations as files, and a token for shop/orders, audience meshgate-ca.
    const trustBundleFile = path.join(dir, 'pod-trust-bundle.pem');
    const tokenFile = path.join(dir, 'pod-token');
    await writeFile(trustBundleFile, annotations['meshgate.dev/trust-bundle']!);
    const now = Math.floor(Date.now() / 1000);
    const podName = 'orders-7d4b9c8f6d-x2x9q';
    await writeFile(
      tokenFile,
      await idp.sign({
        aud: ['meshgate-ca'],
        exp: now + 600,
        iat: now,
        nbf: now,
        iss: ISSUER,
        jti: randomUUID(),
        sub: 'system:serviceaccount:shop:orders',
        'kubernetes.io': { namespace: 'shop', pod: { name: podName, uid: randomUUID() }, serviceaccount: { name: 'orders', uid: randomUUID() } },
      }),
    );
    const file = parse(annotations['meshgate.dev/sidecar-config']!.replaceAll(PATHS.trustBundleFile, trustBundleFile).replaceAll(PATHS.tokenFile, tokenFile));
    // Loopback ports of our choosing instead of the pod's; everything else as injected.
    const started = await startTestSidecar({ ...file, listeners: undefined, workload: { ...file.workload, address: '127.0.0.1:15006' }, log: { level: 'silent' } });
    sidecar = started;

    await eventually(
      async () => {
        const res = await request(`${started.adminUrl}${SIDECAR_READY_PATH}`);
        await res.body.dump();
        return res.statusCode;
      },
      { until: (status) => status === 200, timeoutMs: 15_000, what: 'the injected sidecar to be ready' },
    );
    const dump = (await (await request(`${sidecar.adminUrl}/config_dump`)).body.json()) as { certificate: { spiffeId: string } };
    expect(dump.certificate.spiffeId).toBe('spiffe://cluster.local/ns/shop/sa/orders');
    // The app is not up: the full readiness still waits for it.
    const full = await request(`${sidecar.adminUrl}/ready`);
    expect(full.statusCode).toBe(503);
    await full.body.dump();
    expect(idp.fetches()).toBeGreaterThan(0);
  });
});
