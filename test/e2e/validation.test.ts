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
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { policyDoc, writeSnapshot as writeStaticSnapshot } from '../helpers/static-policy.ts';

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
