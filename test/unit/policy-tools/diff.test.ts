import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PolicyDocument } from '../../../src/policy/types.ts';
import { diffPolicies, formatChange, parseAccessLog, summaryLine } from '../../../src/policy-tools/diff.ts';
import { BILLING, FRONTEND, load, writePolicySets } from './explain-fixtures.ts';

let dir: string;
let oldDocs: PolicyDocument[];
let newDocs: PolicyDocument[];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshgate-diff-'));
  const { publicKey } = await generateKeyPair('ES256');
  const sets = await writePolicySets(dir, { ...(await exportJWK(publicKey)), kid: 'e1' });
  oldDocs = await load(sets.old);
  newDocs = await load(sets.new);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** An access-log line as src/telemetry/access-log.ts writes it. */
function line(over: Record<string, unknown>): string {
  return JSON.stringify({
    level: 30,
    log: 'access',
    direction: 'inbound',
    method: 'GET',
    authority: 'orders.shop',
    path: '/orders/1',
    protocol: 'HTTP/1.1',
    status: 200,
    source_address: '10.0.0.5',
    source_principal: FRONTEND,
    destination_service: 'orders.shop',
    request_id: 'r',
    ...over,
  });
}

const LOG = [
  line({}), // allowed before and after
  line({ method: 'POST' }), // allow -> deny (no-writes)
  line({ source_principal: BILLING }), // deny -> allow
  line({ path: '/admin' }), // denied before and after
  line({ source_address: '203.0.113.9' }), // IP-denied before and after
  line({ direction: 'outbound' }),
  '{"level":30,"msg":"sidecar started"}',
  'not json',
  '',
].join('\n');

describe('policy diff', () => {
  it('parses inbound lines and counts the skipped ones', () => {
    const log = parseAccessLog(LOG);
    expect(log.calls).toHaveLength(5);
    expect(log.calls[1]!.call).toMatchObject({ from: FRONTEND, to: { service: 'orders', namespace: 'shop' }, method: 'POST', path: '/orders/1', address: '10.0.0.5' });
    expect({ notJson: log.notJson, notInbound: log.notInbound }).toEqual({ notJson: 1, notInbound: 2 });
  });

  it('lists the calls whose outcome changes, with the rule on each side', async () => {
    const log = parseAccessLog(LOG);
    const diff = await diffPolicies(oldDocs, newDocs, log.calls);
    expect(diff.replayed).toBe(5);
    expect(diff.changed.map(formatChange)).toEqual([
      `allow -> deny  POST /orders/1  ${FRONTEND} -> orders.shop  (old: shop/allow-frontend#frontend-orders; new: shop/deny-admin#no-writes)  [line 2]`,
      `deny -> allow  GET /orders/1  ${BILLING} -> orders.shop  (old: authz.denied, default: no ALLOW rule matches; new: shop/allow-frontend#frontend-orders)  [line 3]`,
    ]);
    expect(summaryLine(diff, log)).toBe('5 calls replayed, 2 changed (3 lines skipped: 1 not JSON, 2 not inbound)');
  });

  it('finds nothing when the sets are the same', async () => {
    const log = parseAccessLog(LOG);
    const diff = await diffPolicies(oldDocs, oldDocs, log.calls);
    expect(diff.changed).toEqual([]);
  });

  it('adding a DENY rule never turns a deny into an allow', async () => {
    const log = parseAccessLog(LOG);
    const extra = await diffPolicies(
      oldDocs,
      newDocs.filter((d) => d.kind !== 'AuthorizationPolicy' || d.metadata.name === 'deny-admin').concat(oldDocs.filter((d) => d.metadata.name === 'allow-frontend')),
      log.calls,
    );
    expect(extra.changed.every((c) => c.old.allow && !c.new.allow)).toBe(true);
  });

  it('does not replay ValidationPolicy: the log keeps no headers to check', async () => {
    const sub = join(dir, 'validation');
    await mkdir(sub);
    await writeFile(
      join(sub, 'v.yaml'),
      `apiVersion: meshgate.dev/v1
kind: ValidationPolicy
metadata: { name: input, namespace: shop }
spec:
  rules: [{ name: tenant, requiredHeaders: [x-tenant] }]
`,
    );
    const diff = await diffPolicies(oldDocs, [...oldDocs, ...(await load(sub))], parseAccessLog(LOG).calls);
    expect(diff.changed).toEqual([]);
  });
});
