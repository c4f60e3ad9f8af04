import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CryptoKey } from 'jose';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePolicyFolder } from '../../../src/policy/parse-documents.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';
import type { ExplainCall } from '../../../src/policy-tools/explain.ts';
import { explainCall, formatTrail, parseWorkload, verdictLine } from '../../../src/policy-tools/explain.ts';
import { BILLING, FRONTEND, IDP, load, ORDERS, writePolicySets, writeVersionsSet } from './explain-fixtures.ts';

let dir: string;
let docs: PolicyDocument[];
let privateKey: CryptoKey;
let oldDir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshgate-explain-'));
  const pair = await generateKeyPair('ES256', { extractable: true });
  privateKey = pair.privateKey;
  const sets = await writePolicySets(dir, { ...(await exportJWK(pair.publicKey)), kid: 'e1', alg: 'ES256', use: 'sig' });
  oldDir = sets.old;
  docs = await load(sets.old);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function validDocs(yaml: string): Promise<PolicyDocument[]> {
  const sub = await mkdtemp(join(dir, 'extra-'));
  await writeFile(join(sub, 'p.yaml'), yaml);
  const parsed = await parsePolicyFolder(sub);
  if (parsed.errors.length > 0) throw new Error(JSON.stringify(parsed.errors));
  return load(sub);
}

const call = (over: Partial<ExplainCall> = {}): ExplainCall => ({ from: FRONTEND, to: ORDERS, method: 'GET', path: '/orders/1', ...over });

function token(claims: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: IDP, sub: 'alice', aud: 'orders', iat: now, exp: now + 300, ...claims }).setProtectedHeader({ alg: 'ES256', kid: 'e1' }).sign(privateKey);
}

describe('explainCall', () => {
  it('reports the invalid document of the set and keeps the rest', async () => {
    const parsed = await parsePolicyFolder(oldDir);
    expect(parsed.errors.map((e) => e.field)).toEqual(['spec.action']);
    expect(parsed.documents).toHaveLength(4);
  });

  it('allows by principal and path, naming the rule that decided and the ones that did not match', async () => {
    const e = await explainCall(docs, call());
    expect(verdictLine(e)).toBe('ALLOW');
    expect(e.rule).toBe('shop/allow-frontend#frontend-orders');
    expect(e.trail.filter((t) => t.stage === 'authz').map((t) => [t.rule, t.matched, t.decides])).toEqual([
      ['shop/allow-frontend#frontend-orders', true, true],
      ['shop/allow-frontend#idp-reports', false, false],
      ['shop/deny-admin#admin', false, false],
    ]);
  });

  it('denies by default when no ALLOW rule matches (another principal)', async () => {
    const e = await explainCall(docs, call({ from: 'spiffe://cluster.local/ns/shop/sa/billing' }));
    expect(verdictLine(e)).toBe('DENY (authz.denied) by default: no ALLOW rule matches');
    expect(e.rule).toBeUndefined();
  });

  it.each([['/admin/users'], ['/orders/../admin'], ['/orders/%2e%2e/admin'], ['//admin'], ['/admin;x=1/users']])('denies %s by the DENY path rule, after normalizing it', async (path) => {
    const e = await explainCall(docs, call({ path }));
    expect(verdictLine(e)).toBe('DENY (authz.denied) by shop/deny-admin#admin');
    expect(e.path.startsWith('/admin')).toBe(true);
  });

  it('refuses a path the sidecar refuses', async () => {
    const e = await explainCall(docs, call({ path: '/orders%2F..%2Fadmin' }));
    expect(e).toMatchObject({ allow: false, code: 'request.invalid_path' });
  });

  it('applies the IP deny list only when an address is given', async () => {
    const denied = await explainCall(docs, call({ address: '203.0.113.7' }));
    expect(verdictLine(denied)).toBe('DENY (ip.denied) by shop/blocklist#deny');
    expect(denied.trail.find((t) => t.decides)?.stage).toBe('ip-access');
    expect(verdictLine(await explainCall(docs, call({ address: '2001:db8::1' })))).toBe('DENY (ip.denied) by shop/blocklist#deny');
    expect((await explainCall(docs, call({ address: '10.1.2.3' }))).allow).toBe(true);
    expect((await explainCall(docs, call())).allow).toBe(true);
  });

  it('matches requestPrincipals with --claims (iss/sub, no verification)', async () => {
    const reports = call({ from: undefined, path: '/reports/daily' });
    expect((await explainCall(docs, reports)).allow).toBe(false);
    const e = await explainCall(docs, { ...reports, claims: { iss: IDP, sub: 'alice' } });
    expect(verdictLine(e)).toBe('ALLOW');
    expect(e.rule).toBe('shop/allow-frontend#idp-reports');
    expect(e.trail.find((t) => t.stage === 'authn')?.note).toContain(`${IDP}/alice`);
    expect((await explainCall(docs, { ...reports, claims: { iss: 'https://other.example', sub: 'alice' } })).allow).toBe(false);
  });

  it('verifies --jwt with the authn filter: a good token allows, a bad one is refused by authn', async () => {
    const reports = call({ from: undefined, path: '/reports/daily' });
    const good = await explainCall(docs, { ...reports, jwt: await token({}) });
    expect(verdictLine(good)).toBe('ALLOW');
    const wrongAudience = await explainCall(docs, { ...reports, jwt: await token({ aud: 'billing' }) });
    expect(wrongAudience.allow).toBe(false);
    expect(wrongAudience.code).toMatch(/^authn\./);
  });

  it('selects documents for the destination workload', async () => {
    // allow-frontend selects orders only: for payments no ALLOW policy applies (deny by default, or allow with the switch)
    const payments = call({ to: { service: 'payments', namespace: 'shop' } });
    expect((await explainCall(docs, payments)).reason).toMatch(/no ALLOW policy applies/);
    expect((await explainCall(docs, payments, { allowWhenNoPolicy: true })).allow).toBe(true);
    expect(verdictLine(await explainCall(docs, { ...payments, path: '/admin' }, { allowWhenNoPolicy: true }))).toBe('DENY (authz.denied) by shop/deny-admin#admin');
    // another namespace: none of shop's documents apply
    expect((await explainCall(docs, call({ to: { service: 'orders', namespace: 'other' }, path: '/admin' }), { allowWhenNoPolicy: true })).allow).toBe(true);
  });

  it('lists the rate-limit rules an allowed call would take a token from, shadow ones marked', async () => {
    const limits = await validDocs(`apiVersion: meshgate.dev/v1
kind: RateLimitPolicy
metadata: { name: limits, namespace: shop }
spec:
  selector: { services: [orders] }
  rules:
    - { name: writes, match: { methods: [POST] }, key: [source.principal], limit: { requests: 10, per: 1s } }
    - { name: reads, match: { paths: ["/orders/*"] }, key: ["claim:tenant", source.ip], limit: { requests: 100, per: 1m }, burst: 20, scope: global }
---
apiVersion: meshgate.dev/v1
kind: RateLimitPolicy
metadata: { name: trial, namespace: shop }
spec:
  mode: shadow
  rules: [{ name: tight, key: [source.ip], limit: { requests: 1, per: 1s } }]
`);
    const e = await explainCall([...docs, ...limits], call());
    expect(formatTrail(e.trail.filter((t) => t.stage === 'ratelimit'))).toEqual([
      '  ratelimit shop/limits#writes no match',
      '  ratelimit shop/limits#reads takes a token: 100 per 60000 ms, burst 20, per claim:tenant + source.ip, global',
      '  ratelimit shop/trial#tight takes a token: 1 per 1000 ms, burst 1, per source.ip, local (shadow: never refuses)',
    ]);
    // A refused call spends no budget: no rate-limit entries.
    const denied = await explainCall([...docs, ...limits], call({ from: 'spiffe://cluster.local/ns/shop/sa/billing' }));
    expect(denied.trail.some((t) => t.stage === 'ratelimit')).toBe(false);
  });

  it('says which throttle and concurrency rules apply to a call, with their limits', async () => {
    const limits = await validDocs(`apiVersion: meshgate.dev/v1
kind: RateLimitPolicy
metadata: { name: guard, namespace: shop }
spec:
  selector: { services: [orders] }
  rules:
    - { name: paced, key: [source.principal], limit: { requests: 10, per: 1s }, throttle: { queue: 20, maxDelay: 2s } }
    - { name: orders-in-flight, match: { paths: ["/orders/*"] }, concurrency: { max: 4, queue: 10, maxWait: 5s } }
    - { name: per-tenant, key: ["claim:tenant"], concurrency: { max: 2 } }
    - { name: reports, match: { paths: ["/reports/*"] }, concurrency: { max: 1 } }
`);
    const e = await explainCall([...docs, ...limits], call());
    expect(formatTrail(e.trail.filter((t) => t.stage === 'ratelimit'))).toEqual([
      '  ratelimit shop/guard#paced takes a token: 10 per 1000 ms, burst 10, per source.principal, local; over the rate, up to 20 callers wait at most 2000 ms (then 429)',
      '  ratelimit shop/guard#orders-in-flight concurrency limit: at most 4 calls in flight, then up to 10 wait at most 5000 ms (503 ratelimit.concurrency_timeout), then 503 ratelimit.concurrency_exceeded; one limit for every call it matches',
      '  ratelimit shop/guard#per-tenant concurrency limit: at most 2 calls in flight, no queue, then 503 ratelimit.concurrency_exceeded; per claim:tenant',
      '  ratelimit shop/guard#reports no match',
    ]);
  });

  const VALIDATION = `apiVersion: meshgate.dev/v1
kind: ValidationPolicy
metadata: { name: input, namespace: shop }
spec:
  selector: { services: [orders] }
  rules:
    - name: tenant
      match: { paths: ["/orders/*"] }
      requiredHeaders: [x-tenant]
      maxHeaderBytes: 512
    - name: create
      match: { paths: ["/orders/*"], methods: [POST] }
      contentTypes: [application/json]
      maxBodyBytes: 1KiB
      jsonSchema: { type: object, required: [item] }
    - { name: other, match: { paths: ["/reports*"] }, requiredHeaders: [x-report] }
---
apiVersion: meshgate.dev/v1
kind: ValidationPolicy
metadata: { name: trial, namespace: shop }
spec:
  selector: { services: [orders] }
  mode: shadow
  rules: [{ name: region, match: { paths: ["/orders/*"] }, requiredHeaders: [x-region] }]
`;

  it('refuses a call missing a required header with the validate rule, after the rate limits, as the sidecar would', async () => {
    const input = await validDocs(VALIDATION);
    const limits = await validDocs(`apiVersion: meshgate.dev/v1
kind: RateLimitPolicy
metadata: { name: limits, namespace: shop }
spec:
  rules: [{ name: all, key: [source.ip], limit: { requests: 10, per: 1s } }]
`);
    const e = await explainCall([...docs, ...limits, ...input], call());
    expect(verdictLine(e)).toBe('DENY (validate.missing_header) by shop/input#tenant');
    expect(e).toMatchObject({ allow: false, code: 'validate.missing_header', rule: 'shop/input#tenant', reason: 'missing required header x-tenant' });
    // Chain order: authz let it through, the rate limit took a token, validation refused; one decider, and no rule checked after it.
    expect(e.trail.filter((t) => t.stage !== 'path').map((t) => t.stage)).toEqual(['ip-access', 'authn', 'authz', 'authz', 'authz', 'ratelimit', 'validate']);
    expect(e.trail.filter((t) => t.decides).map((t) => t.rule)).toEqual(['shop/input#tenant']);
    expect(formatTrail(e.trail.filter((t) => t.stage === 'validate'))).toEqual(['  validate  shop/input#tenant validate.missing_header: missing required header x-tenant <- decides']);
    // An empty value is missing too (the filter's own check).
    expect((await explainCall([...docs, ...input], call({ headers: { 'x-tenant': ' ' } }))).code).toBe('validate.missing_header');
  });

  it('allows a call whose headers pass, lists body checks as not evaluated, and never refuses for a shadow rule', async () => {
    const input = await validDocs(VALIDATION);
    const e = await explainCall([...docs, ...input], call({ method: 'POST', headers: { 'x-tenant': 'acme', 'content-type': 'application/json; charset=utf-8' } }));
    expect(verdictLine(e)).toBe('ALLOW');
    expect(e.rule).toBe('shop/allow-frontend#frontend-orders');
    expect(formatTrail(e.trail.filter((t) => t.stage === 'validate'))).toEqual([
      '  validate  shop/input#tenant header checks pass',
      '  validate  shop/input#create header checks pass; jsonSchema, maxBodyBytes need the body: not evaluated offline (a call without a body gets validate.malformed_json)',
      '  validate  shop/input#other no match',
      '  validate  shop/trial#region shadow: would refuse (validate.missing_header: missing required header x-region)',
    ]);
    // A declared Content-Length is a head check: decided without the body.
    const declared = await explainCall([...docs, ...input], call({ method: 'POST', headers: { 'x-tenant': 'acme', 'content-type': 'application/json', 'content-length': '2048' } }));
    expect(verdictLine(declared)).toBe('DENY (validate.body_too_large) by shop/input#create');
  });

  it('checks content types and header size from the --header flags', async () => {
    const input = await validDocs(VALIDATION);
    const xml = await explainCall([...docs, ...input], call({ method: 'POST', headers: { 'x-tenant': 'acme', 'content-type': 'text/xml' } }));
    expect(xml).toMatchObject({ allow: false, code: 'validate.content_type', rule: 'shop/input#create' });
    // No content type, no length: no body described, so no content to type (as the sidecar skips a call without a body).
    const bare = await explainCall([...docs, ...input], call({ method: 'POST', headers: { 'x-tenant': 'acme' } }));
    expect(bare.allow).toBe(true);
    expect(bare.trail.find((t) => t.rule === 'shop/input#create')?.note).toContain('contentTypes not checked: no body described');
    const big = await explainCall([...docs, ...input], call({ headers: { 'x-tenant': 'acme', cookie: 'c'.repeat(600) } }));
    expect(big).toMatchObject({ allow: false, code: 'validate.headers_too_large', rule: 'shop/input#tenant' });
    // A refused call never reaches validation, and `validation: false` (policy diff) skips it.
    const denied = await explainCall([...docs, ...input], call({ from: 'spiffe://cluster.local/ns/shop/sa/billing' }));
    expect(denied.code).toBe('authz.denied');
    expect(denied.trail.some((t) => t.stage === 'validate')).toBe(false);
    expect((await explainCall([...docs, ...input], call(), { validation: false })).allow).toBe(true);
  });

  it('scores injection in the path, query and headers, and shows the signatures that matched', async () => {
    const guard = await validDocs(`apiVersion: meshgate.dev/v1
kind: ValidationPolicy
metadata: { name: guard, namespace: shop }
spec:
  selector: { services: [orders] }
  rules:
    - name: api
      match: { paths: ["/orders/*"] }
      injection: { headers: [user-agent] }
---
apiVersion: meshgate.dev/v1
kind: ValidationPolicy
metadata: { name: watch, namespace: shop }
spec:
  selector: { services: [orders] }
  rules: [{ name: log, injection: { mode: log } }]
`);
    const attack = await explainCall([...docs, ...guard], call({ path: '/orders/1?id=1%27%20UNION%20SELECT%20password%20FROM%20users--' }));
    expect(verdictLine(attack)).toBe('DENY (validate.injection) by shop/guard#api');
    expect(attack.reason).toBe('the request looks like an injection attack (sql, score 9, threshold 5)');
    expect(formatTrail(attack.trail.filter((t) => t.stage === 'validate'))).toEqual([
      '  validate  shop/guard#api validate.injection: the request looks like an injection attack (sql, score 9, threshold 5); injection in the path, query and headers: score 9 of 5 (sql): sql.union_select, sql.quote_keyword, sql.select_from at query:id <- decides',
    ]);
    // Clean: the score, and the body listed as not evaluated; a log-mode finding only notes what it would log.
    const clean = await explainCall([...docs, ...guard], call({ method: 'POST', path: '/orders/1?q=O%27Brien', headers: { 'content-type': 'application/json', 'user-agent': '<script>' } }));
    expect(clean.code).toBe('validate.injection');
    const fine = await explainCall([...docs, ...guard], call({ method: 'POST', path: '/orders/1?q=O%27Brien', headers: { 'content-type': 'application/json' } }));
    expect(verdictLine(fine)).toBe('ALLOW');
    expect(fine.trail.find((t) => t.rule === 'shop/guard#api')?.note).toBe(
      'header checks pass; injection in the path, query and headers: score 0 of 5; injection in the body needs the body: not evaluated offline',
    );
    const watch = guard.filter((d) => d.metadata.name === 'watch');
    const logged = await explainCall([...docs, ...watch], call({ path: '/orders/1?f=..%2F..%2Fetc%2Fpasswd' }));
    expect(logged.allow).toBe(true);
    expect(logged.trail.find((t) => t.rule === 'shop/watch#log')?.note).toContain(
      'injection in the path, query and headers: score 10 of 5 (traversal): traversal.dot_dot_slash, traversal.unix_secret_file at query:f (log mode: would be logged, not refused)',
    );
  });

  it('formats one trail line per entry', async () => {
    const lines = formatTrail((await explainCall(docs, call({ path: '/orders/../admin', address: '10.0.0.1' }))).trail);
    expect(lines).toEqual([
      '  path      normalized /orders/../admin -> /admin',
      '  ip-access shop/blocklist address 10.0.0.1 passes',
      '  authn     not evaluated (no --jwt or --claims): no request principal',
      '  authz     ALLOW enforce shop/allow-frontend#frontend-orders no match',
      '  authz     ALLOW enforce shop/allow-frontend#idp-reports no match',
      '  authz     DENY  enforce shop/deny-admin#admin matched <- decides',
    ]);
  });

  it('parses SERVICE[.NS]', () => {
    expect(parseWorkload('orders.shop')).toEqual(ORDERS);
    expect(parseWorkload('orders')).toEqual({ service: 'orders', namespace: 'default' });
    expect(parseWorkload('Orders')).toBeUndefined();
  });
});

describe("explainCall: the caller's Route versions at an instant (--at)", () => {
  let versionDocs: PolicyDocument[];
  beforeAll(async () => {
    versionDocs = await load(await writeVersionsSet(dir));
  });
  const at = (iso: string) => ({ at: Date.parse(iso) });
  const pinned = (version: string, over: Partial<ExplainCall> = {}) => call({ headers: { 'x-meshgate-version': version }, ...over });

  it('a pinned version answers before a brown-out window, is refused inside it, and answers at its end', async () => {
    const before = await explainCall(versionDocs, pinned('v1'), at('2026-05-05T09:59:59Z'));
    expect(verdictLine(before)).toBe('ALLOW');
    expect(before.trail[0]).toEqual({
      stage: 'version',
      rule: 'shop/orders-versions#v1',
      matched: true,
      note: 'answers at 2026-05-05T09:59:59.000Z; next brown-out 2026-05-05T10:00:00.000Z to 2026-05-05T11:00:00.000Z',
    });
    const inside = await explainCall(versionDocs, pinned('v1'), at('2026-05-05T10:30:00Z'));
    expect(verdictLine(inside)).toBe('DENY (route.version_brownout) by shop/orders-versions#v1');
    expect(inside.reason).toBe(
      'version v1 of orders.shop is browned out until 2026-05-05T11:00:00.000Z before it is retired: use version v2 (x-meshgate-version: v2); see https://docs.example/orders/v2',
    );
    expect(inside.trail.map((t) => t.stage)).toEqual(['version']); // decided on the caller's side: the destination's chain never runs
    expect(verdictLine(await explainCall(versionDocs, pinned('v1'), at('2026-05-05T11:00:00Z')))).toBe('ALLOW');
    expect(verdictLine(await explainCall(versionDocs, pinned('v1'), at('2026-06-01T12:00:00Z')))).toBe('DENY (route.version_brownout) by shop/orders-versions#v1');
  });

  it('a retired version is refused at any instant; an undeclared one is unknown', async () => {
    for (const when of ['2020-01-01', '2030-01-01']) expect(verdictLine(await explainCall(versionDocs, pinned('v0'), at(when)))).toBe('DENY (route.version_retired) by shop/orders-versions#v0');
    expect((await explainCall(versionDocs, pinned('v0'), at('2030-01-01'))).reason).toBe('version v0 of orders.shop is retired: no successor is named');
    expect(verdictLine(await explainCall(versionDocs, pinned('v9')))).toBe('DENY (route.unknown_version) by shop/orders-versions');
  });

  it('an un-pinned call is refused only when every backend of its route resolves to a version refused then', async () => {
    const legacy = await explainCall(versionDocs, call({ path: '/orders/legacy' }), at('2026-05-05T10:30:00Z'));
    expect(verdictLine(legacy)).toBe('DENY (route.version_brownout) by shop/orders-versions#v1');
    expect(verdictLine(await explainCall(versionDocs, call({ path: '/orders/legacy' }), at('2026-05-05T12:00:00Z')))).toBe('ALLOW');
    // Route `rest` balances over all endpoints: no version to refuse.
    expect(verdictLine(await explainCall(versionDocs, call({ path: '/orders/1' }), at('2026-05-05T10:30:00Z')))).toBe('ALLOW');
  });

  it('takes the Route of the caller named by --from, and says so when there is none to read', async () => {
    // billing has no Route to orders: its sidecar knows no version, whatever frontend's Route says.
    expect(verdictLine(await explainCall(versionDocs, pinned('v1', { from: BILLING }), at('2026-05-05T10:30:00Z')))).toBe(
      'DENY (route.unknown_version) by default: orders.shop has no version of that name',
    );
    const anonymous = await explainCall(versionDocs, pinned('v1', { from: undefined }), at('2026-05-05T10:30:00Z'));
    expect(anonymous.trail[0]).toMatchObject({ stage: 'version', note: 'not evaluated (no --from with a mesh SPIFFE ID: whose Route applies is unknown)' });
  });
});
