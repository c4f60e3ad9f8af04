import { createHash } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PolicyDocument } from '../../src/policy/types.ts';
import { eventually } from '../helpers/eventually.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { policyDoc, writeSnapshot as writeStaticSnapshot } from '../helpers/static-policy.ts';
import type { PolicyHarness, TestPolicyServer } from '../integration/policy-server-harness.ts';
import { createPolicyHarness, meshSidecarConfig } from '../integration/policy-server-harness.ts';

/*
 * Input validation through the real inbound listener. The policy is a
 * last-known-good snapshot written to the sidecar's stateDir before it starts
 * (the configured policy server is a closed port), as in ip-access.test.ts.
 * The app reports the bytes it received, and when the first of them arrived.
 */

const MiB = 1024 * 1024;
const doc = policyDoc;
const writeSnapshot = (stateDir: string, documents: PolicyDocument[]) => writeStaticSnapshot(stateDir, { service: 'orders' }, documents);

const input = doc('ValidationPolicy', 'orders-input', {
  rules: [
    {
      name: 'create',
      match: { paths: ['/orders'], methods: ['POST'] },
      contentTypes: ['application/json'],
      maxBodyBytes: '64KiB',
      jsonSchema: {
        type: 'object',
        required: ['item', 'qty'],
        properties: { item: { $ref: '#/$defs/sku' }, qty: { type: 'integer', minimum: 1 } },
        $defs: { sku: { type: 'string', pattern: '^[A-Z]{3}-[0-9]+$' } },
      },
    },
    { name: 'uploads', match: { paths: ['/uploads/*'] }, requiredHeaders: ['x-tenant'] },
  ],
});
const shadow = doc('ValidationPolicy', 'next-version', { mode: 'shadow', rules: [{ name: 'api-version', match: { paths: ['/orders'] }, requiredHeaders: ['x-api-version'] }] });

describe('ValidationPolicy through the inbound listener', () => {
  let stateDir: string;
  let app: TestServer;
  let sidecar: TestSidecar;
  const appEvents = new EventEmitter();

  beforeAll(async () => {
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-validate-'));
    await writeSnapshot(stateDir, [input, shadow]);
    app = await startHttpServer((req, res) => {
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        if (bytes === 0) appEvents.emit('first-bytes');
        bytes += c.length;
        hash.update(c);
        if (bytes <= 4096) chunks.push(c);
      });
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ bytes, sha256: hash.digest('hex'), body: bytes <= 4096 ? Buffer.concat(chunks).toString('utf8') : undefined }));
      });
    });
    sidecar = await startTestSidecar({
      workload: { service: 'orders', namespace: 'shop' },
      inbound: { app: app.url, appProtocol: 'http1' }, // the test app speaks HTTP/1.1 only, also to HTTP/2 callers
      policy: { servers: ['127.0.0.1:1'], stateDir },
      authorization: { allowWhenNoPolicy: true },
      log: { level: 'info', accessLog: true },
    });
  });
  afterAll(async () => {
    await sidecar?.drain(200);
    await app?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  const post = async (p: string, body: string | Readable, headers: Record<string, string>) => {
    const res = await request(`${sidecar.inboundUrl}${p}`, { method: 'POST', headers: { host: 'orders.shop', ...headers }, body });
    return { status: res.statusCode, headers: res.headers, json: (await res.body.json()) as Record<string, unknown> };
  };
  const metrics = async (): Promise<string> => await (await request(`${sidecar.adminUrl}/metrics`)).body.text();

  it('a valid JSON POST reaches the app with its exact bytes', async () => {
    // Odd spacing and key order: the app must get what the caller sent, not a re-serialization.
    const body = '{ "qty":2,\n  "item": "ABC-42" }';
    const res = await post('/orders', body, { 'content-type': 'application/json', 'x-api-version': '2' });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ bytes: Buffer.byteLength(body), sha256: createHash('sha256').update(body).digest('hex'), body });
  });

  it('a chunked valid body is buffered, checked and forwarded whole', async () => {
    const body = JSON.stringify({ item: 'XYZ-7', qty: 1, note: 'n'.repeat(3000) });
    const res = await post('/orders', Readable.from([Buffer.from(body.slice(0, 100)), Buffer.from(body.slice(100))]), { 'content-type': 'application/json', 'x-api-version': '2' });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ bytes: body.length, body });
  });

  it('an invalid body is refused 400 validate.schema with the rule, and never reaches the app', async () => {
    const hits = app.hits();
    const res = await post('/orders', JSON.stringify({ item: 'ABC-42', qty: 0 }), { 'content-type': 'application/json', 'x-api-version': '2' });
    expect(res.status).toBe(400);
    expect(res.headers['x-meshgate-reason']).toBe('validate.schema');
    expect(res.json).toMatchObject({ code: 'validate.schema', reason: 'JSON body at /qty: must be >= 1', rule: 'shop/orders-input#create', decision_id: expect.stringMatching(/^[0-9a-z]{12}$/) });
    expect(app.hits()).toBe(hits);

    const line = sidecar.logs.find((l) => l.log === 'access' && l.reason === 'validate.schema');
    expect(line).toMatchObject({ status: 400, rule: 'shop/orders-input#create', decision_id: res.json.decision_id, path: '/orders' });
    const text = await metrics();
    expect(text).toContain('meshgate_validation_decisions_total{policy="shop/orders-input",rule="create",decision="failed"} 1');
    expect(text).toMatch(/meshgate_requests_total\{[^}]*response_code="400",reason="validate.schema"\} 1/);
  });

  it('malformed JSON, a wrong content type and a body over maxBodyBytes each get their code', async () => {
    const hits = app.hits();
    expect(await post('/orders', '{"item":', { 'content-type': 'application/json' })).toMatchObject({ status: 400, json: { code: 'validate.malformed_json' } });
    expect(await post('/orders', 'item=ABC-1', { 'content-type': 'application/x-www-form-urlencoded' })).toMatchObject({ status: 415, json: { code: 'validate.content_type' } });
    // A chunked body of 1 MiB against maxBodyBytes 64KiB: refused once 64 KiB are read, the connection closed.
    const big = await post(
      '/orders',
      Readable.from(
        (function* () {
          for (let i = 0; i < 16; i++) yield Buffer.alloc(64 * 1024, 0x20);
        })(),
      ),
      { 'content-type': 'application/json' },
    );
    expect(big).toMatchObject({ status: 413, json: { code: 'validate.body_too_large', rule: 'shop/orders-input#create', reason: 'request body exceeds 65536 bytes' } });
    expect(big.headers.connection).toBe('close');
    expect(app.hits()).toBe(hits);
  });

  it('HTTP/2: a JSON body is checked the same way; an oversized one is refused 413 without the rest being read', async () => {
    const session = http2.connect(sidecar.inboundUrl);
    const call = (body: Buffer, sent = body.length) =>
      new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
        const stream = session.request({ ':method': 'POST', ':path': '/orders', ':authority': 'orders.shop', 'content-type': 'application/json' });
        let status = 0;
        const chunks: Buffer[] = [];
        stream.on('response', (h) => (status = Number(h[':status'])));
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => resolve({ status, json: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> }));
        stream.on('error', reject);
        stream.write(body.subarray(0, sent));
        if (sent === body.length) stream.end();
      });
    try {
      const hits = app.hits();
      expect(await call(Buffer.from('{"item":"ABC-1","qty":3}'))).toMatchObject({ status: 200, json: { body: '{"item":"ABC-1","qty":3}' } });
      expect(await call(Buffer.from('{"item":"ABC-1","qty":"3"}'))).toMatchObject({ status: 400, json: { code: 'validate.schema', reason: 'JSON body at /qty: must be integer' } });
      // 256 KiB sent, the stream never ended by the caller: the answer must not wait for the rest.
      expect(await call(Buffer.alloc(256 * 1024, 0x20), 256 * 1024 - 1)).toMatchObject({ status: 413, json: { code: 'validate.body_too_large' } });
      expect(app.hits()).toBe(hits + 1);
    } finally {
      session.close();
    }
  });

  it('a 2 MiB upload to a path with no body rule streams through: the app reads before the caller has sent it all', async () => {
    const firstBytes = once(appEvents, 'first-bytes');
    const hash = createHash('sha256');
    const body = Readable.from(
      (async function* () {
        const half = Buffer.alloc(MiB, 0x61);
        hash.update(half);
        yield half;
        // A sidecar that buffered the body would never let the app see these bytes: the test would time out.
        await firstBytes;
        const rest = Buffer.alloc(MiB, 0x62);
        hash.update(rest);
        yield rest;
      })(),
    );
    const res = await post('/uploads/blob', body, { 'content-type': 'application/octet-stream', 'x-tenant': 'acme' });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ bytes: 2 * MiB, sha256: hash.digest('hex') });
    expect(await post('/uploads/blob', 'x', { 'content-type': 'text/plain' })).toMatchObject({ status: 400, json: { code: 'validate.missing_header', reason: 'missing required header x-tenant' } });
  });

  it('a shadow rule never refuses; its failures are counted and in the access log', async () => {
    const res = await post('/orders', JSON.stringify({ item: 'ABC-1', qty: 1 }), { 'content-type': 'application/json', 'x-request-id': 'shadow-1' });
    expect(res.status).toBe(200);
    expect(sidecar.logs.find((l) => l.log === 'access' && l.request_id === 'shadow-1')).toMatchObject({ status: 200, shadow_denials: ['shop/next-version#api-version'] });
    const text = await metrics();
    expect(text).toMatch(/meshgate_shadow_denials_total\{policy="shop\/next-version",rule="api-version"\} [1-9]/);
    expect(text).toMatch(/meshgate_validation_decisions_total\{policy="shop\/next-version",rule="api-version",decision="shadow_failed"\} [1-9]/);
  });
});

const GUARD = `apiVersion: meshgate.dev/v1
kind: ValidationPolicy
metadata: { name: guard, namespace: shop }
spec:
  selector: { services: [orders] }
  rules:
    - name: api
      match: { paths: ["/api/*"] }
      injection: { headers: [user-agent, cookie] }
      json: { maxDepth: 16, maxArrayItems: 1000 }
    - name: watch
      match: { paths: ["/watch/*"] }
      injection: { mode: log }
`;

describe('injection detection and safe JSON, from a policy server, through the inbound listener', () => {
  let h: PolicyHarness;
  let ps: TestPolicyServer;
  let app: TestServer;
  let stateDir: string;
  let sidecar: TestSidecar;

  const send = async (p: string, opts: { method?: 'GET' | 'POST'; body?: string; headers?: Record<string, string> } = {}) => {
    const res = await request(`${sidecar.inboundUrl}${p}`, {
      method: opts.method ?? (opts.body === undefined ? 'GET' : 'POST'),
      headers: { host: 'orders.shop', ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }), ...opts.headers },
      ...(opts.body === undefined ? {} : { body: opts.body }),
    });
    return { status: res.statusCode, headers: res.headers, json: (await res.body.json()) as Record<string, unknown> };
  };
  const metrics = async (): Promise<string> => await (await request(`${sidecar.adminUrl}/metrics`)).body.text();
  const counted = async (name: string, labels: Record<string, string>) => sumOf(parsePrometheusText(await metrics()), name, labels);
  const refusals = (reason: string) => counted('meshgate_requests_total', { reason });

  beforeAll(async () => {
    h = await createPolicyHarness();
    await h.write('shop/guard.yaml', GUARD);
    ps = await h.start();
    app = await startHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ body: Buffer.concat(chunks).toString('utf8') }));
      });
    });
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-inject-'));
    sidecar = await startTestSidecar({
      ...(await meshSidecarConfig(h, 'orders', { servers: [ps.address], stateDir })),
      mtls: { mode: 'PERMISSIVE' }, // plaintext callers too: the test calls the inbound port directly
      inbound: { app: app.url, appProtocol: 'http1' },
      authorization: { allowWhenNoPolicy: true },
      log: { level: 'info', accessLog: true },
    } as Parameters<typeof startTestSidecar>[0]);
    // The pushed document is in force once an attack is refused.
    await eventually(async () => (await send('/api/x?q=%3Cscript%3E')).status, { until: (status) => status === 403, timeoutMs: 10_000, what: 'the pushed ValidationPolicy to refuse an attack' });
  });
  afterAll(async () => {
    await sidecar?.drain(200);
    await ps?.close().catch(() => {});
    await app?.close();
    await h?.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('benign JSON with quotes, SQL words and markup reaches the app byte for byte', async () => {
    const body = JSON.stringify({ name: "Conan O'Brien", note: 'Please select the best option from the menu -- thanks!', html: '&lt;b&gt;hi&lt;/b&gt;' });
    expect(await send('/api/profile?q=O%27Brien', { body, headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0' } })).toMatchObject({
      status: 200,
      json: { body },
    });
  });

  it('an attack in the query, a header or the JSON body is refused 403 validate.injection: logged with class and score, counted, never at the app', async () => {
    const hits = app.hits();
    const [refusedBefore, failedBefore] = [await refusals('validate.injection'), await counted('meshgate_validation_decisions_total', { rule: 'api', decision: 'failed' })];
    const query = await send('/api/users?id=1%27%20UNION%20SELECT%20password%20FROM%20users--', { headers: { 'x-request-id': 'inj-1' } });
    expect(query).toMatchObject({
      status: 403,
      json: { code: 'validate.injection', rule: 'shop/guard#api', reason: expect.stringMatching(/^the request looks like an injection attack \(sql, score \d+, threshold 5\)$/) },
    });
    expect(query.headers['x-meshgate-reason']).toBe('validate.injection');
    expect(JSON.stringify(query.json)).not.toContain('UNION');
    expect((await send('/api/x', { headers: { cookie: 'a=1; f=..%2F..%2F..%2Fetc%2Fpasswd' } })).json).toMatchObject({ code: 'validate.injection' });
    expect((await send('/api/hosts', { body: JSON.stringify({ target: { host: '127.0.0.1 && whoami' } }) })).json).toMatchObject({ code: 'validate.injection' });
    expect(app.hits()).toBe(hits);

    const line = sidecar.logs.find((l) => l.msg === 'validation refused the call' && l.request_id === 'inj-1');
    expect(line).toMatchObject({
      code: 'validate.injection',
      rule: 'shop/guard#api',
      injection_class: 'sql',
      injection_location: 'query:id',
      injection_signatures: expect.arrayContaining(['sql.union_select']),
    });
    expect(sidecar.logs.find((l) => l.log === 'access' && l.request_id === 'inj-1')).toMatchObject({ status: 403, reason: 'validate.injection' });
    // One count per refusal, like every other reason.
    expect((await refusals('validate.injection')) - refusedBefore).toBe(3);
    expect((await counted('meshgate_validation_decisions_total', { rule: 'api', decision: 'failed' })) - failedBefore).toBe(3);
  });

  it('safe JSON: a duplicate key, a deep body and a huge array are refused 400 with their own codes', async () => {
    const hits = app.hits();
    expect(await send('/api/orders', { body: '{"role":"user","role":"admin"}' })).toMatchObject({ status: 400, json: { code: 'validate.json_duplicate_key' } });
    expect(await send('/api/orders', { body: `${'['.repeat(17)}${']'.repeat(17)}` })).toMatchObject({
      status: 400,
      json: { code: 'validate.json_too_deep', reason: 'request body nests JSON deeper than 16 levels' },
    });
    expect(await send('/api/orders', { body: `[${'0,'.repeat(5000)}0]` })).toMatchObject({ status: 400, json: { code: 'validate.json_too_many_members' } });
    expect(await send('/api/orders', { body: '{"id":12345678901234567890}' })).toMatchObject({ status: 400, json: { code: 'validate.json_unsafe_number' } });
    expect(app.hits()).toBe(hits);
    expect(await refusals('validate.json_duplicate_key')).toBe(1);
    expect(await refusals('validate.json_too_deep')).toBe(1);
  });

  it('log mode: the attack reaches the app, the finding is logged and counted as logged', async () => {
    const res = await send('/watch/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E', { headers: { 'x-request-id': 'inj-log' } });
    expect(res.status).toBe(200);
    expect(sidecar.logs.find((l) => l.request_id === 'inj-log' && l.log_only === true)).toMatchObject({ code: 'validate.injection', injection_class: 'xss' });
    expect(await metrics()).toContain('meshgate_validation_decisions_total{policy="shop/guard",rule="watch",decision="logged"} 1');
  });
});
