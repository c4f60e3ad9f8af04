import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { createPolicySnapshotStore, snapshotFileFor } from '../../src/policy/snapshot-store.ts';
import { documentDigest } from '../../src/policy/snapshot.ts';
import type { DocumentEnvelope } from '../../src/policy/subscriber-validate.ts';
import { createPolicyValidator } from '../../src/policy/validate.ts';
import { createLogger } from '../../src/telemetry/logger.ts';

/*
 * bench:filters policy: one document per per-call filter of the inbound chain,
 * all selecting the bench workload (default/bench), written as the sidecar's
 * last-known-good snapshot file (src/policy/snapshot-store.ts, the same code
 * the sidecar reads it with), so a sidecar whose `policy:` points at an
 * unreachable server boots with them in force. No policy server, no CA.
 *
 *  - IPAccessPolicy: allow list with 127.0.0.1 (the load generator's address);
 *  - RequestAuthentication: one JWT rule, inline JWKS (an ES256 key made here);
 *  - AuthorizationPolicy: ALLOW, a few rules; the one that matches the load is
 *    by method, path and requestPrincipals (the JWT's iss/sub), so authz needs
 *    authn's verified claims.
 */

export const BENCH_WORKLOAD = { service: 'bench', namespace: 'default' } as const;
const ISSUER = 'https://idp.bench.meshgate';
const SUBJECT = 'load-generator';
const AUDIENCE = 'bench';

export interface FiltersPolicy {
  /** Bearer token the load generator sends (`authorization` header value). */
  readonly authorization: string;
  /** The snapshot file written. */
  readonly file: string;
  /** Policy documents in force, as `Kind namespace/name`. */
  readonly documents: readonly string[];
}

function documents(publicJwk: Record<string, unknown>): unknown[] {
  const metadata = (name: string) => ({ name, namespace: BENCH_WORKLOAD.namespace });
  const selector = { services: [BENCH_WORKLOAD.service] };
  return [
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'IPAccessPolicy',
      metadata: metadata('bench-ip'),
      spec: { selector, allow: ['127.0.0.1/32', '::1/128', '10.0.0.0/8'], deny: ['192.0.2.0/24'] },
    },
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'RequestAuthentication',
      metadata: metadata('bench-jwt'),
      spec: {
        selector,
        jwtRules: [
          {
            name: 'bench-idp',
            issuer: ISSUER,
            jwks: { keys: [publicJwk] },
            audiences: [AUDIENCE],
            algorithms: ['ES256'],
            fromHeaders: [{ name: 'authorization', prefix: 'Bearer ' }],
          },
        ],
      },
    },
    {
      apiVersion: 'meshgate.dev/v1',
      kind: 'AuthorizationPolicy',
      metadata: metadata('bench-allow'),
      spec: {
        selector,
        action: 'ALLOW',
        rules: [
          { name: 'admin-only', from: [{ requestPrincipals: [`${ISSUER}/admin`] }], to: [{ paths: ['/admin/*'] }] },
          { name: 'health', to: [{ methods: ['GET'], paths: ['/healthz'] }] },
          { name: 'api-writes', from: [{ requestPrincipals: [`${ISSUER}/*`] }], to: [{ methods: ['POST', 'PUT'], paths: ['/api/*'] }] },
          { name: 'bench-load', from: [{ requestPrincipals: [`${ISSUER}/${SUBJECT}`] }], to: [{ methods: ['GET', 'HEAD'], paths: ['/', '/api/*'] }] },
        ],
      },
    },
  ];
}

/** Makes the key, the token and the snapshot file in `stateDir`. */
export async function writeFiltersPolicy(stateDir: string): Promise<FiltersPolicy> {
  const pair = await generateKeyPair('ES256');
  const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'bench', alg: 'ES256', use: 'sig' };
  const now = Math.floor(Date.now() / 1000);
  // Valid for a day: longer than any run.
  const token = await new SignJWT({ iss: ISSUER, sub: SUBJECT, aud: AUDIENCE, iat: now, exp: now + 86_400 })
    .setProtectedHeader({ alg: 'ES256', kid: 'bench', typ: 'JWT' })
    .sign(pair.privateKey);

  const validator = createPolicyValidator();
  const envelopes: DocumentEnvelope[] = documents(publicJwk).map((raw, index) => {
    const result = validator.validate(raw, { file: 'bench/lib/filters-policy.ts', index });
    if (!result.ok) throw new Error(`bench policy document ${index} rejected by src/policy: ${result.errors.map((e) => `${e.field}: ${e.reason}`).join('; ')}`);
    const doc = result.document.document;
    return { kind: doc.kind, namespace: doc.metadata.namespace, name: doc.metadata.name, json: JSON.stringify(doc), digest: documentDigest(doc) };
  });

  const store = createPolicySnapshotStore({
    file: snapshotFileFor(stateDir, BENCH_WORKLOAD),
    logger: createLogger({ level: 'warn', name: 'bench-filters', destination: process.stderr }),
  });
  const applied = store.apply({ version: 'bench-filters', documents: envelopes, services: [] }, Date.now());
  if (!applied.ack.accepted) throw new Error(`bench policy refused: ${applied.ack.errors.map((e) => `${e.document} ${e.field}: ${e.reason}`).join('; ')}`);
  await store.flush();
  const stats = store.stats();
  if (stats.writes !== 1) throw new Error(`cannot write ${store.file}: ${stats.lastWriteError ?? 'unknown error'}`);
  return { authorization: `Bearer ${token}`, file: store.file, documents: envelopes.map((e) => `${e.kind} ${e.namespace}/${e.name}`) };
}
