import { createHmac } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallContext } from '../../../src/core/call-context.ts';
import type { Filter } from '../../../src/core/filter.ts';
import type { Verdict } from '../../../src/core/verdict.ts';
import { createSecretFiles } from '../../../src/filters/user-filter/secret-files.ts';
import { createUserFilterRuntime } from '../../../src/filters/user-filter/user-filter.ts';
import { checkFilterDocuments } from '../../../src/policy/filter-sources.ts';
import { parsePolicyFolder } from '../../../src/policy/parse-documents.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';
import { createSandboxLoader } from '../../../src/sandbox/quickjs-sandbox.ts';
import { callContext } from '../../helpers/call-context.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';

/*
 * The examples of deploy/examples/filters, as `policy check` and the policy
 * server read them (sourceFile inlined), run through the sandbox.
 */

const FOLDER = path.resolve(import.meta.dirname, '../../../deploy/examples/filters');
const filters = new Map<string, Filter>();
/** The payments sidecars' mounted Secret: the HMAC example's key, as raw bytes. */
const HMAC_KEY = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
let secretsDir: string;

beforeAll(async () => {
  secretsDir = await mkdtemp(path.join(tmpdir(), 'meshgate-filter-secrets-'));
  await writeFile(path.join(secretsDir, 'payments-hmac-key'), HMAC_KEY);
  const parsed = await checkFilterDocuments(await parsePolicyFolder(FOLDER), { sandbox: createSandboxLoader(), folder: FOLDER });
  expect(parsed.errors).toEqual([]);
  for (const { document } of parsed.documents) {
    const clock = createFakeClock();
    const runtime = createUserFilterRuntime({ clock, random: () => 0.5, secrets: createSecretFiles({ dir: secretsDir, clock }) });
    await runtime.prepare([document as PolicyDocument]);
    const stages = runtime.compile([document]);
    filters.set(document.metadata.name, Object.values(stages)[0]!);
  }
});

afterAll(async () => {
  await rm(secretsDir, { recursive: true, force: true });
});

function run(name: string, call: CallContext): Verdict {
  return filters.get(name)!.onRequest(call) as Verdict;
}

describe('example: tenant isolation (tenant.yaml)', () => {
  const withTenant = (tenant: unknown, path: string) => callContext({ path, annotations: { retries: 0, auth: { principal: 'i/s', issuer: 'i', subject: 's', claims: { tenant } } } });
  it('lets a caller reach its own tenant', () => {
    expect(run('tenant-isolation', withTenant('acme', '/tenants/acme/orders')).kind).toBe('continue');
  });
  it("denies another tenant's path, and a call without a tenant claim", () => {
    expect(run('tenant-isolation', withTenant('acme', '/tenants/globex/orders'))).toMatchObject({ code: 'filter.denied', rule: 'shop/tenant-isolation#tenant_mismatch' });
    expect(run('tenant-isolation', callContext({ path: '/tenants/acme/orders' }))).toMatchObject({ rule: 'shop/tenant-isolation#tenant_unknown' });
  });
  it('leaves other paths alone', () => {
    expect(run('tenant-isolation', callContext({ path: '/health' })).kind).toBe('continue');
  });
});

describe('example: HMAC request signatures (hmac-signature.yaml)', () => {
  const KEY = HMAC_KEY;
  const signed = (over: { method?: string; path?: string; query?: string; timestamp?: number; signature?: string }) => {
    const method = over.method ?? 'POST';
    const p = over.path ?? '/payments/42';
    const query = over.query ?? 'currency=eur';
    const timestamp = String(over.timestamp ?? Math.floor(Date.now() / 1000));
    const signature = over.signature ?? createHmac('sha256', KEY).update(`${method}\n${p}\n${query}\n${timestamp}`).digest('hex');
    return callContext({ method, path: p, query, headers: { 'x-timestamp': timestamp, 'x-signature': signature } });
  };
  it('admits a call signed with the key (the in-sandbox HMAC-SHA256 agrees with node:crypto)', () => {
    expect(run('signed-requests', signed({})).kind).toBe('continue');
    expect(run('signed-requests', signed({ path: '/payments/ünïcode', query: 'a=1&b=' + 'x'.repeat(300) })).kind).toBe('continue');
  });
  it('denies a tampered path, a wrong signature, an old timestamp and a missing signature', () => {
    const good = signed({});
    expect(run('signed-requests', { ...good, path: '/payments/43' })).toMatchObject({ rule: 'shop/signed-requests#signature_invalid' });
    expect(run('signed-requests', signed({ signature: 'ab'.repeat(32) }))).toMatchObject({ rule: 'shop/signed-requests#signature_invalid' });
    expect(run('signed-requests', signed({ timestamp: Math.floor(Date.now() / 1000) - 3600 }))).toMatchObject({ rule: 'shop/signed-requests#signature_expired' });
    expect(run('signed-requests', callContext())).toMatchObject({ rule: 'shop/signed-requests#signature_missing' });
  });
  it('signs with the mounted key only: without the secrets folder, or for a document that does not list the name, the check fails closed', async () => {
    const parsed = await checkFilterDocuments(await parsePolicyFolder(FOLDER), { sandbox: createSandboxLoader(), folder: FOLDER });
    const doc = parsed.documents.map((d) => d.document).find((d) => d.metadata.name === 'signed-requests')! as PolicyDocument & { spec: { secrets: string[] } };
    const unlisted = { ...doc, spec: { ...doc.spec, secrets: [] } } as PolicyDocument;
    for (const [what, document, secrets] of [
      ['no secrets folder', doc, undefined],
      ['the name not in spec.secrets', unlisted, createSecretFiles({ dir: secretsDir, clock: createFakeClock() })],
    ] as const) {
      const runtime = createUserFilterRuntime({ clock: createFakeClock(), random: () => 0.5, ...(secrets ? { secrets } : {}) });
      await runtime.prepare([document]);
      const filter = Object.values(runtime.compile([document]))[0]!;
      expect({ what, verdict: filter.onRequest(signed({})) }).toMatchObject({ what, verdict: { code: 'filter.user_check_failed' } });
    }
  });
});

describe('example: revoked API keys (api-key-denylist.yaml)', () => {
  it('denies a revoked key and admits others and calls without a key', () => {
    expect(run('revoked-api-keys', callContext({ headers: { 'x-api-key': 'ak_live_7Hq2abcdefgh' } }))).toMatchObject({ rule: 'shop/revoked-api-keys#api_key_revoked', status: 401 });
    expect(run('revoked-api-keys', callContext({ headers: { 'x-api-key': 'ak_live_good0000000' } })).kind).toBe('continue');
    expect(run('revoked-api-keys', callContext()).kind).toBe('continue');
  });
});

describe('example: canary tag (canary.yaml)', () => {
  it('tags opted-in testers and a stable share of users for the app, and strips a tag the caller sent', () => {
    const opted = callContext({ headers: { 'x-canary-opt-in': '1' } });
    expect(run('canary-tag', opted).kind).toBe('continue');
    expect(opted.annotations.upstreamEdits?.setHeaders).toEqual({ 'x-canary': '1' });
    const forged = callContext({ headers: { 'x-canary': '1' } });
    run('canary-tag', forged);
    expect(forged.annotations.upstreamEdits?.removeHeaders).toEqual(['x-canary']);
    let tagged = 0;
    for (let i = 0; i < 1000; i++) {
      const call = callContext({ headers: { 'x-user-id': `user-${i}` } });
      run('canary-tag', call);
      if (call.annotations.upstreamEdits?.setHeaders['x-canary'] === '1') tagged++;
    }
    expect(tagged).toBeGreaterThan(50);
    expect(tagged).toBeLessThan(150);
    const again = callContext({ headers: { 'x-user-id': 'user-7' } });
    const first = callContext({ headers: { 'x-user-id': 'user-7' } });
    run('canary-tag', first);
    run('canary-tag', again);
    expect(again.annotations.upstreamEdits).toEqual(first.annotations.upstreamEdits);
  });
});
