import { describe, expect, it } from 'vitest';
import type { Verdict } from '../../../../src/core/verdict.ts';
import { createValidateFilter } from '../../../../src/filters/validate/validate-filter.ts';
import type { PolicyDocument } from '../../../../src/policy/types.ts';
import { validateRuntime } from '../../../helpers/filter-runtimes.ts';
import type { CallInput } from './validate-fixtures.ts';
import { recordingMetrics, testCall, validation } from './validate-fixtures.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

const orderSchema = {
  type: 'object',
  required: ['item', 'qty'],
  properties: {
    item: { $ref: '#/$defs/sku' },
    qty: { type: 'integer', minimum: 1 },
    email: { type: 'string', format: 'email' },
  },
  $defs: { sku: { type: 'string', pattern: '^[A-Z]{3}-[0-9]+$' } },
};

const orders = validation('orders', {
  rules: [
    { name: 'headers', match: { paths: ['/orders*'] }, requiredHeaders: ['x-tenant'], maxHeaderBytes: 512 },
    { name: 'create', match: { paths: ['/orders'], methods: ['POST'] }, contentTypes: ['application/json'], maxBodyBytes: '4KiB', jsonSchema: orderSchema },
    { name: 'upload', match: { paths: ['/uploads/*'] }, contentTypes: ['text/*', 'application/octet-stream'], maxBodyBytes: '64KiB' },
  ],
});

const tenant = { 'x-tenant': 'acme' };
const json = { ...tenant, 'content-type': 'application/json; charset=utf-8' };
const valid = JSON.stringify({ item: 'ABC-1', qty: 2, email: 'a@example.com' });

async function run(documents: PolicyDocument[], input: CallInput, maxBodyBuffer = 1 * MiB) {
  const rec = recordingMetrics();
  const filter = createValidateFilter(documents, validateRuntime({ maxBodyBuffer, metrics: rec.metrics, random: () => 0.5 }));
  const t = testCall(input);
  const pending = filter.onRequest(t.call);
  const synchronous = !(pending instanceof Promise);
  const verdict: Verdict = await pending;
  return { verdict, synchronous, t, ...rec };
}

describe('validate filter: each check passing and failing', () => {
  it.each<[string, CallInput, { code?: string; status?: string; rule?: string; reason?: string | RegExp }]>([
    ['a valid JSON order', { headers: json, body: valid }, {}],
    [
      'required header absent',
      { headers: { 'content-type': 'application/json' }, body: valid },
      { code: 'validate.missing_header', rule: 'shop/orders#headers', reason: 'missing required header x-tenant' },
    ],
    ['required header empty', { headers: { ...json, 'x-tenant': '  ' }, body: valid }, { code: 'validate.missing_header' }],
    ['headers over maxHeaderBytes', { headers: { ...json, cookie: 'c'.repeat(600) }, body: valid }, { code: 'validate.headers_too_large', reason: /^request headers are \d+ bytes, more than 512$/ }],
    [
      'a content type not listed',
      { headers: { ...tenant, 'content-type': 'text/plain' }, body: valid },
      { code: 'validate.content_type', rule: 'shop/orders#create', reason: 'content type "text/plain" is not accepted' },
    ],
    ['a body without content type', { headers: tenant, body: valid }, { code: 'validate.content_type', reason: 'content type (none) is not accepted' }],
    ['a content type by wildcard', { path: '/uploads/a.csv', headers: { ...tenant, 'content-type': 'text/csv' }, body: 'a,b\n' }, {}],
    [
      'Content-Length over maxBodyBytes',
      { headers: json, body: `{"item":"ABC-1","qty":1,"pad":"${'x'.repeat(5000)}"}` },
      { code: 'validate.body_too_large', reason: /^request body of \d+ bytes exceeds 4096$/ },
    ],
    ['a chunked body over maxBodyBytes', { headers: json, body: `{"pad":"${'x'.repeat(5000)}"}`, chunked: true }, { code: 'validate.body_too_large', reason: 'request body exceeds 4096 bytes' }],
    [
      'a schema violation, through $ref',
      { headers: json, body: JSON.stringify({ item: 'abc', qty: 1 }) },
      { code: 'validate.schema', reason: 'JSON body at /item: must match pattern "^[A-Z]{3}-[0-9]+$"' },
    ],
    ['a schema violation, minimum', { headers: json, body: JSON.stringify({ item: 'ABC-1', qty: 0 }) }, { code: 'validate.schema', reason: 'JSON body at /qty: must be >= 1' }],
    ['a required property missing', { headers: json, body: JSON.stringify({ item: 'ABC-1' }) }, { code: 'validate.schema', reason: "JSON body at /: must have required property 'qty'" }],
    ['a format', { headers: json, body: JSON.stringify({ item: 'ABC-1', qty: 1, email: 'nope' }) }, { code: 'validate.schema', reason: 'JSON body at /email: must match format "email"' }],
    ['malformed JSON', { headers: json, body: '{"item": "ABC-1", qty: 1}' }, { code: 'validate.malformed_json', reason: 'request body is not valid JSON' }],
    ['a body that is not UTF-8', { headers: json, body: Buffer.from([0x22, 0xff, 0xfe, 0x22]) }, { code: 'validate.json_invalid_utf8', reason: 'request body is not valid UTF-8' }],
    ['no body where the schema expects one', { headers: json }, { code: 'validate.malformed_json', reason: 'expected a JSON body' }],
  ])('%s', async (_name, input, expected) => {
    const { verdict } = await run([orders], input);
    if (!expected.code) {
      expect(verdict).toEqual({ kind: 'continue' });
      return;
    }
    expect(verdict).toMatchObject({ kind: 'respond', code: expected.code, ...(expected.rule ? { rule: expected.rule } : {}) });
    if (verdict.kind !== 'respond') return;
    expect(verdict.decisionId).toMatch(/^[0-9a-z]{12}$/);
    if (expected.reason instanceof RegExp) expect(verdict.reason).toMatch(expected.reason);
    else if (expected.reason) expect(verdict.reason).toBe(expected.reason);
  });

  it('a refusal never echoes the body: a huge bad value is cut', async () => {
    const key = `k${'y'.repeat(3000)}`;
    const doc = validation('keys', { rules: [{ name: 'r', jsonSchema: { type: 'object', additionalProperties: { type: 'number' } } }] });
    const { verdict } = await run([doc], { headers: json, body: JSON.stringify({ [key]: 'x' }) });
    expect(verdict).toMatchObject({ code: 'validate.schema' });
    expect(verdict.kind === 'respond' && verdict.reason.length).toBeLessThan(400);
  });
});

describe('validate filter: what is read, when', () => {
  it('header checks run synchronously; a call no body rule matches is never read', async () => {
    const { verdict, synchronous, t } = await run([orders], { method: 'PUT', path: '/orders/1', headers: tenant, body: 'anything' });
    expect(verdict).toEqual({ kind: 'continue' });
    expect(synchronous).toBe(true);
    expect(t.produced()).toBe(0); // still streaming: nothing consumed
    expect((await t.forwarded())!.toString()).toBe('anything');
  });

  it('a declared Content-Length is enough for maxBodyBytes: no read, synchronous refusal', async () => {
    const { verdict, synchronous, t } = await run([orders], { path: '/uploads/big', headers: { ...tenant, 'content-type': 'text/plain' }, body: 'z'.repeat(70 * KiB) });
    expect(synchronous).toBe(true);
    expect(verdict).toMatchObject({ code: 'validate.body_too_large', rule: 'shop/orders#upload', headers: { connection: 'close' } });
    expect(t.produced()).toBe(0);
  });

  it('a valid body is forwarded byte for byte after it was read', async () => {
    const { verdict, synchronous, t } = await run([orders], { headers: json, body: valid, chunked: true });
    expect(synchronous).toBe(false);
    expect(verdict).toEqual({ kind: 'continue' });
    expect((await t.forwarded())!.toString()).toBe(valid);
  });

  it('an oversized chunked body is refused with 413 after reading at most the limit (plus one chunk)', async () => {
    const { verdict, t } = await run([orders], { path: '/uploads/big', headers: { ...tenant, 'content-type': 'application/octet-stream' }, generated: 50 * MiB });
    expect(verdict).toMatchObject({ code: 'validate.body_too_large', reason: 'request body exceeds 65536 bytes', headers: { connection: 'close' } });
    expect(t.produced()).toBeLessThanOrEqual(64 * KiB + 2 * 16 * KiB); // the limit, the chunk that crossed it, one read-ahead
  });

  it('a JSON body larger than limits.maxBodyBuffer is refused, never buffered past it', async () => {
    const doc = validation('big', { rules: [{ name: 'schema', jsonSchema: { type: 'object' } }] });
    const declared = await run([doc], { headers: json, body: `{"a":"${'x'.repeat(200 * KiB)}"}` }, 100 * KiB);
    expect(declared.synchronous).toBe(true);
    expect(declared.verdict).toMatchObject({ code: 'validate.body_too_large', reason: 'request body exceeds the 102400 bytes the sidecar buffers for validation (limits.maxBodyBuffer)' });
    const chunked = await run([doc], { headers: json, generated: 10 * MiB }, 100 * KiB);
    expect(chunked.verdict).toMatchObject({ code: 'validate.body_too_large' });
    expect(chunked.t.produced()).toBeLessThanOrEqual(100 * KiB + 2 * 16 * KiB);
  });

  it('a caller that resets while its body is read gets request.cancelled, and no rule is counted', async () => {
    const doc = validation('schema', { rules: [{ name: 'r', jsonSchema: { type: 'object' } }] });
    const { verdict, decisions } = await run([doc], { headers: json, generated: 1 * MiB, resetAfter: 2 * 16 * KiB });
    expect(verdict).toMatchObject({ kind: 'respond', code: 'request.cancelled', reason: 'aborted' });
    expect(decisions).toEqual([]);
  });

  it('gRPC: the binary body is never read for a schema; header checks still apply', async () => {
    const doc = validation('grpc', { rules: [{ name: 'r', requiredHeaders: ['x-tenant'], jsonSchema: { type: 'object' } }] });
    const ok = await run([doc], { grpc: true, headers: tenant, body: Buffer.from([0, 0, 0, 0, 1, 9]) });
    expect(ok.verdict).toEqual({ kind: 'continue' });
    expect(ok.synchronous).toBe(true);
    expect(ok.t.produced()).toBe(0);
    expect((await run([doc], { grpc: true, body: Buffer.from([0, 0, 0, 0, 0]) })).verdict).toMatchObject({ code: 'validate.missing_header' });
  });
});

describe('validate filter: match, several rules, shadow mode', () => {
  it.each<[string, string, string, string | undefined]>([
    ['POST /orders: every check', 'POST', '/orders', 'validate.malformed_json'],
    ['GET /orders: only the header rule (method)', 'GET', '/orders', undefined],
    ['POST /orders/1: only the header rule (path)', 'POST', '/orders/1', undefined],
    ['POST /users: no rule', 'POST', '/users', undefined],
    ['POST /orders;v=1: path parameters do not escape a rule', 'POST', '/orders;v=1', 'validate.malformed_json'],
  ])('%s', async (_name, method, path, code) => {
    const { verdict } = await run([orders], { method, path, headers: json, body: 'not json' });
    if (code) expect(verdict).toMatchObject({ code });
    else expect(verdict).toEqual({ kind: 'continue' });
  });

  it('every matching rule must pass; each evaluated rule is counted, the first failing enforcing rule decides', async () => {
    const { verdict, decisions } = await run([orders], { headers: json, body: JSON.stringify({ item: 'ABC-1', qty: -1 }) });
    expect(verdict).toMatchObject({ code: 'validate.schema', rule: 'shop/orders#create' });
    expect(decisions).toEqual(['shop/orders#headers passed', 'shop/orders#create failed']);
  });

  it('a shadow document never refuses: its failures go on the call, the shadow and decision counters', async () => {
    const shadow = validation(
      'strict',
      {
        mode: 'shadow',
        rules: [
          { name: 'tenant', requiredHeaders: ['x-tenant'] },
          { name: 'small', maxBodyBytes: 16 },
          { name: 'shape', jsonSchema: { type: 'array' } },
        ],
      },
      'ops',
    );
    const body = JSON.stringify({ item: 'ABC-1', qty: 1 });
    const { verdict, t, decisions, shadow: shadowed } = await run([shadow], { headers: { 'content-type': 'application/json' }, body, chunked: true });
    expect(verdict).toEqual({ kind: 'continue' });
    expect(t.call.annotations.shadowDenials).toEqual(['ops/strict#tenant', 'ops/strict#small', 'ops/strict#shape']);
    expect(shadowed).toEqual(['ops/strict#tenant', 'ops/strict#small', 'ops/strict#shape']);
    expect(decisions).toEqual(['ops/strict#tenant shadow_failed', 'ops/strict#small shadow_failed', 'ops/strict#shape shadow_failed']);
    expect((await t.forwarded())!.toString()).toBe(body); // the app still gets every byte
  });

  it('a shadow size rule on a large chunked body: the bytes read and the unread rest both reach the app', async () => {
    const shadow = validation('cap', { mode: 'shadow', rules: [{ name: 'cap', maxBodyBytes: '32KiB' }] });
    const { verdict, t } = await run([shadow], { headers: {}, generated: 1 * MiB });
    expect(verdict).toEqual({ kind: 'continue' });
    expect(t.call.annotations.shadowDenials).toEqual(['shop/cap#cap']);
    const forwarded = await t.forwarded();
    expect(forwarded!.length).toBe(1 * MiB);
  });

  it('a shadow failure next to an enforcing pass: the call goes on', async () => {
    const shadow = validation('next', { mode: 'shadow', rules: [{ name: 'v2', requiredHeaders: ['x-api-version'] }] });
    const { verdict, t, decisions } = await run([orders, shadow], { method: 'GET', path: '/orders', headers: tenant });
    expect(verdict).toEqual({ kind: 'continue' });
    expect(t.call.annotations.shadowDenials).toEqual(['shop/next#v2']);
    expect(decisions).toEqual(['shop/orders#headers passed', 'shop/next#v2 shadow_failed']);
  });

  it('no ValidationPolicy: a filter that continues without looking', async () => {
    const { verdict, synchronous, decisions } = await run([], { headers: {}, body: 'x' });
    expect(verdict).toEqual({ kind: 'continue' });
    expect(synchronous).toBe(true);
    expect(decisions).toEqual([]);
  });
});
