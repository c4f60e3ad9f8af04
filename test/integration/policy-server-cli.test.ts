import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPolicyClient, policyChannelCredentials, policyServerSpiffeId } from '../../src/policy/policy-api.ts';
import type { PolicyHarness } from './policy-server-harness.ts';
import { createPolicyHarness, openSubscriber, TRUST_DOMAIN } from './policy-server-harness.ts';

const BIN = path.join(import.meta.dirname, '../../bin/meshgate.js');

/** Runs the CLI to completion: exit code and output. */
async function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

describe('meshgate policy-server (CLI)', () => {
  let h: PolicyHarness;
  beforeAll(async () => {
    h = await createPolicyHarness();
    await h.write('shop/orders.yaml', 'apiVersion: meshgate.dev/v1\nkind: AuthorizationPolicy\nmetadata: { name: orders, namespace: shop }\nspec: { rules: [] }\n');
  });
  afterAll(async () => {
    await h?.close();
  });

  it('a bad config file exits 2 with one line naming the file and the field', async () => {
    const file = path.join(h.dir, 'bad.yaml');
    await writeFile(file, 'identity:\n  ca: { address: "127.0.0.1:1", trustBundleFile: x.pem }\npolicies: { folder: p }\npush: { debounce: 5 }\n');
    const result = await run(['policy-server', '--config', file]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe(`${file}: push.debounce: expected a duration like 250ms, 5s, 2m or 1h, got 5\n`);
    const missing = await run(['policy-server']);
    expect(missing).toMatchObject({ code: 2, stderr: 'meshgate policy-server: missing --config FILE\n' });
  });

  /** Starts `meshgate policy-server` on the harness folder; resolves with the child and its ports once it listens. */
  const spawnServer = async (name: string, extra: string[] = []) => {
    const file = path.join(h.dir, `${name}.yaml`);
    await writeFile(
      file,
      [
        'identity:',
        `  trustDomain: ${TRUST_DOMAIN}`,
        `  ca: { address: "${h.ca.address}", trustBundleFile: ${path.join(h.ca.dir, 'trust-bundle.pem')}, serverName: localhost }`,
        '  tokenFile: policy-server.token',
        'listen: { address: 127.0.0.1, port: 0 }',
        'admin: { address: 127.0.0.1, port: 0 }',
        'policies: { folder: policies }',
        `adminApi: { audit: { file: ${name}-audit.jsonl } }`,
        ...extra,
        '',
      ].join('\n'),
    );
    const child = spawn(process.execPath, [BIN, 'policy-server', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const listening = await new Promise<{ grpcPort: number; adminPort: number }>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`exited ${code}`)));
      createInterface({ input: child.stdout }).on('line', (line) => {
        const entry = JSON.parse(line) as { msg?: string; grpcPort: number; adminPort: number };
        if (entry.msg === 'meshgate policy-server listening') resolve(entry);
      });
    }).catch((err: unknown) => {
      child.kill('SIGKILL');
      throw err;
    });
    return { child, ...listening };
  };

  it('serves sidecars, and on SIGTERM ends their streams with UNAVAILABLE and exits 0', async () => {
    const { child, ...listening } = await spawnServer('cli');
    try {
      const ready = await request(`http://127.0.0.1:${listening.adminPort}/ready`);
      expect(ready.statusCode).toBe(200);
      await ready.body.dump();
      const metrics = await (await request(`http://127.0.0.1:${listening.adminPort}/metrics`)).body.text();
      expect(metrics).toContain('process_cpu_seconds_total'); // the standard names, no prefix
      expect(metrics).not.toContain('meshgate_process_');

      const client = createPolicyClient(`127.0.0.1:${listening.grpcPort}`, policyChannelCredentials(await h.identity('shop', 'orders'), policyServerSpiffeId(TRUST_DOMAIN)));
      const sub = openSubscriber(client, { sidecarId: 'cli-orders' }, true);
      expect((await sub.next()).documents.map((d) => d.name)).toEqual(['orders']);

      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      expect(await sub.ended).toMatchObject({ code: grpc.status.UNAVAILABLE, details: 'policy server shutting down' });
      expect((await exited)[0]).toBe(0);
      client.close();
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('the shared-registry file of a replica killed with SIGKILL is deleted by another replica once two leases passed', async () => {
    const registry = path.join(h.folder, '.registry');
    const lease = ['registry: { shared: { lease: 300ms } }'];
    const killed = await spawnServer('killed', lease);
    const [leftBehind, ...others] = (await readdir(registry)).filter((name) => name.endsWith('.json'));
    expect(others).toEqual([]);
    const exited = once(killed.child, 'exit');
    killed.child.kill('SIGKILL');
    await exited;
    // Its file stays (with, if the kill came mid-renewal, a temporary file).
    expect(await readdir(registry)).toContain(leftBehind);

    const survivor = await h.start({ registry: { shared: { lease: '300ms' } } });
    try {
      // Only the survivor's own file is left.
      await expect
        .poll(
          async () => {
            const names = await readdir(registry);
            return names.length === 1 && names[0] !== leftBehind;
          },
          { timeout: 5_000 },
        )
        .toBe(true);
      // Its stdout is written in batches (up to 100 ms late): the line may follow the deletion.
      await expect.poll(() => survivor.logs.some((l) => l.msg === 'removed the shared registry file of a replica gone for two leases'), { timeout: 2_000 }).toBe(true);
    } finally {
      await survivor.close();
    }
  });
});
