import { afterEach, describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../../src/policy/parse-documents.ts';
import type { WorkerPolicyParser } from '../../../src/policy/parse-in-worker.ts';
import { createWorkerPolicyParser } from '../../../src/policy/parse-in-worker.ts';
import { formatPolicyError } from '../../../src/policy/policy-error.ts';
import { doc } from './helpers.ts';

describe('policy files parsed on a worker thread', () => {
  let parser: WorkerPolicyParser | undefined;
  afterEach(async () => {
    await parser?.close();
    parser = undefined;
  });

  const text = [
    doc('AuthorizationPolicy', 'rules: [{ to: [{ methods: [GET] }] }]'),
    doc('AuthorizationPolicy', 'action: PERMIT', '{ name: typo, namespace: shop }'),
    doc('Route', 'service: orders\nroutes: [{ match: { path: { regex: "/v[0-9]+/.*" } }, timeout: 2s }]', '{ name: r, namespace: shop }'),
  ].join('---\n');

  it('gives what parsePolicyText gives, documents frozen', async () => {
    parser = createWorkerPolicyParser();
    const inWorker = await parser.parse(text, 'p.yaml');
    const inProcess = parsePolicyText(text, 'p.yaml');
    expect(inWorker).toEqual(inProcess);
    expect(inWorker.documents).toHaveLength(2);
    expect(Object.isFrozen(inWorker.documents[1]!.document.spec)).toBe(true);
  });

  it('rejects a file that takes longer than its budget whole, then parses the next one on a new worker', async () => {
    parser = createWorkerPolicyParser({ timeoutMs: 1500 });
    await parser.parse(text, 'warm-up.yaml'); // the worker's start-up is not counted; this only makes the test quick
    // About 4 s of CPU (600 documents of 250 CIDRs, within every limit); the small file after it, a few ms.
    const slow = Array.from({ length: 600 }, (_, i) =>
      doc('IPAccessPolicy', `deny: [${Array.from({ length: 250 }, (_, j) => `"10.${i % 250}.${j}.0/24"`).join(', ')}]`, `{ name: p${i}, namespace: shop }`),
    ).join('---\n');
    const [timedOut, next] = await Promise.all([parser.parse(slow, 'slow.yaml'), parser.parse(text, 'after.yaml')]);
    expect(timedOut.documents).toEqual([]);
    expect(timedOut.errors.map(formatPolicyError)).toEqual(['slow.yaml: document 0: (top level): could not be parsed within 1500 ms; no document of it applies']);
    expect(next.documents.map((d) => d.key)).toEqual(['AuthorizationPolicy/shop/p1', 'Route/shop/r']);
  });

  it('answers the files still waiting when it is closed', async () => {
    parser = createWorkerPolicyParser();
    const pending = [parser.parse(text, 'a.yaml'), parser.parse(text, 'b.yaml')];
    await parser.close();
    for (const result of await Promise.all(pending)) expect(result.errors[0]!.reason).toBe('could not be parsed: the parser was stopped; no document of it applies');
  });
});
