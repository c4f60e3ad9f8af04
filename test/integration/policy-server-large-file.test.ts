import { setTimeout } from 'node:timers/promises';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PolicyHarness } from './policy-server-harness.ts';
import { createPolicyHarness } from './policy-server-harness.ts';

/*
 * A large policy file costs seconds of parsing and validation. On the
 * server's own thread that stalled /live (and every stream) for as long:
 * the server parses on a worker thread now.
 */

const ipPolicy = (i: number): string =>
  [
    'apiVersion: meshgate.dev/v1',
    'kind: IPAccessPolicy',
    `metadata: { name: p${i}, namespace: shop }`,
    `spec: { deny: [${Array.from({ length: 250 }, (_, j) => `"10.${i}.${j}.0/24"`).join(', ')}] }`,
  ].join('\n');

describe('meshgate policy-server: a large policy file', () => {
  let h: PolicyHarness;
  beforeAll(async () => {
    h = await createPolicyHarness();
  });
  afterAll(async () => {
    await h?.close();
  });

  it('/live keeps answering while the file is parsed and validated', async () => {
    const ps = await h.start();
    // Within every limit (50 documents of 250 CIDRs, 230 KiB), and a few hundred ms of CPU to validate.
    await h.write('big.yaml', `${Array.from({ length: 50 }, (_, i) => ipPolicy(i)).join('\n---\n')}\n`);
    const started = performance.now();
    let loadedAfter: number | undefined;
    const loading = ps.server.store.rescan().then(() => (loadedAfter = performance.now() - started));
    // The client shares the server's event loop: a parse on it would leave one long gap between answers.
    const answeredAt: number[] = [];
    while (loadedAfter === undefined) {
      const res = await request(`http://127.0.0.1:${ps.server.adminPort}/live`);
      await res.body.dump();
      expect(res.statusCode).toBe(200);
      answeredAt.push(performance.now() - started);
      await setTimeout(5); // paced, so the calls do not take the CPU the parse needs
    }
    await loading;
    expect(ps.server.store.documents()).toHaveLength(50);
    expect(answeredAt.length).toBeGreaterThan(3);
    const gaps = answeredAt.map((at, i) => at - (answeredAt[i - 1] ?? 0));
    expect(Math.max(...gaps)).toBeLessThan(loadedAfter / 3);
    await ps.close();
  });
});
