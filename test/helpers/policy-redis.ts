import { generateKeyPairSync } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { SignJWT } from 'jose';
import { request } from 'undici';
import type { PolicyServerConfigInput } from '../../src/config/policy-server-schema.ts';
import type { PolicyHarness } from '../integration/policy-server-harness.ts';
import { parsePrometheusText, sumOf } from './prom-text.ts';

/*
 * Policy-server replicas with `store: redis` as Kubernetes runs them: each
 * with a policy folder of its own (the same files, like a ConfigMap mounted
 * into each pod) and no disk shared with the others; an admin caller with a
 * bearer JWT.
 */

export const ADMIN_SUBJECT = 'alice@example.com';

export interface RedisReplicaKit {
  /** Config overrides for replica `name`: its own folder (filled with `files`), the Redis, the admin JWT. */
  overrides(name: string, files: Record<string, string>): Promise<Partial<PolicyServerConfigInput>>;
  /** A bearer token for ADMIN_SUBJECT (role admin). */
  token(): Promise<string>;
}

export async function redisReplicaKit(h: PolicyHarness, redisUrl: string, opts: { lease?: string } = {}): Promise<RedisReplicaKit> {
  const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pub = path.join(h.dir, 'admin-jwt.pub.pem');
  await writeFile(pub, keys.publicKey.export({ format: 'pem', type: 'spki' }));
  return {
    async overrides(name, files) {
      const folder = path.join(h.dir, `pod-${name}`, 'policies');
      for (const [file, text] of Object.entries(files)) {
        await mkdir(path.dirname(path.join(folder, file)), { recursive: true });
        await writeFile(path.join(folder, file), text);
      }
      await mkdir(folder, { recursive: true });
      return {
        store: 'redis',
        redis: { url: redisUrl, lease: opts.lease ?? '900ms', timeout: '500ms' },
        policies: { folder },
        adminApi: {
          jwt: { issuers: ['https://login.example.com'], publicKeyFile: pub, algorithms: ['ES256'] },
          roleBindings: [{ subjects: [ADMIN_SUBJECT], role: 'admin' }],
          audit: { file: path.join(h.dir, `pod-${name}`, 'unused-audit.jsonl') },
        },
      };
    },
    token() {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ sub: ADMIN_SUBJECT })
        .setProtectedHeader({ alg: 'ES256' })
        .setIssuer('https://login.example.com')
        .setAudience('meshgate-policy-admin')
        .setIssuedAt(now)
        .setExpirationTime(now + 600)
        .sign(keys.privateKey);
    },
  };
}

/** One admin API call over the plain-HTTP admin listener on `adminPort`. */
export async function adminCall(adminPort: number, token: string, method: string, url: string, body?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await request(`http://127.0.0.1:${adminPort}${url}`, {
    method: method as 'GET',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/yaml' },
    ...(body !== undefined ? { body } : {}),
  });
  return { status: res.statusCode, json: (await res.body.json()) as Record<string, unknown> };
}

/** /ready of a policy server: status and body. */
export async function readiness(adminPort: number): Promise<{ status: number; body: { ready: boolean; checks: Record<string, string> } }> {
  const res = await request(`http://127.0.0.1:${adminPort}/ready`);
  return { status: res.statusCode, body: (await res.body.json()) as { ready: boolean; checks: Record<string, string> } };
}

/** The value of one metric (summed over matching labels) from a policy server's /metrics. */
export async function metric(adminPort: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await request(`http://127.0.0.1:${adminPort}/metrics`);
  return sumOf(parsePrometheusText(await res.body.text()), name, labels);
}
