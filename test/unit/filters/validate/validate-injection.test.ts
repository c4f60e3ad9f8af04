import { describe, expect, it } from 'vitest';
import type { Verdict } from '../../../../src/core/verdict.ts';
import { createValidateFilter } from '../../../../src/filters/validate/validate-filter.ts';
import type { PolicyDocument } from '../../../../src/policy/types.ts';
import { validateRuntime } from '../../../helpers/filter-runtimes.ts';
import type { CallInput } from './validate-fixtures.ts';
import { recordingMetrics, testCall, validation } from './validate-fixtures.ts';

/* Injection detection through the validate filter: where it looks, what it answers, what it logs, per mode. */

const json = { 'content-type': 'application/json' };

async function run(documents: PolicyDocument[], input: CallInput & { query?: string }) {
  const rec = recordingMetrics();
  const lines: { fields: Record<string, unknown>; message: string }[] = [];
  const logger = { info: (fields: object, message: string) => void lines.push({ fields: fields as Record<string, unknown>, message }), error: () => {} };
  const filter = createValidateFilter(documents, validateRuntime({ metrics: rec.metrics, logger, random: () => 0.5 }));
  const t = testCall(input);
  if (input.query !== undefined) Object.assign(t.call, { query: input.query });
  const pending = filter.onRequest(t.call);
  const synchronous = !(pending instanceof Promise);
  const verdict: Verdict = await pending;
  return { verdict, synchronous, t, lines, ...rec };
}

const guard = (spec: Record<string, unknown> = {}, mode?: string) =>
  validation('guard', { ...(mode ? { mode } : {}), rules: [{ name: 'api', match: { paths: ['/api/*'] }, injection: { headers: ['user-agent', 'cookie'], ...spec } }] });

describe('injection detection in the validate filter', () => {
  it.each<[string, CallInput & { query?: string }, string]>([
    ['a tautology in a query parameter', { method: 'GET', path: '/api/users', query: 'id=1%27%20OR%20%271%27%3D%271' }, 'sql'],
    ['UNION SELECT in the path', { method: 'GET', path: '/api/users/1%20UNION%20SELECT%20password%20FROM%20users' }, 'sql'],
    ['a script tag in a header it lists', { method: 'GET', path: '/api/x', headers: { 'user-agent': '<script>alert(1)</script>' } }, 'xss'],
    ['a traversal in a cookie value', { method: 'GET', path: '/api/x', headers: { cookie: 'theme=dark; file=..%2F..%2F..%2Fetc%2Fpasswd' } }, 'traversal'],
    ['a command in a JSON string, nested', { path: '/api/hosts', headers: json, body: JSON.stringify({ target: { host: '127.0.0.1; whoami' } }) }, 'command'],
    ['an event handler in a JSON key', { path: '/api/x', headers: json, body: '{"<img src=x onerror=alert(1)>":1}' }, 'xss'],
    ['a form field', { path: '/api/login', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: "user=admin'--&pass=x" }, 'sql'],
    ['a text body', { path: '/api/notes', headers: { 'content-type': 'text/plain' }, body: '<svg/onload=alert(1)>' }, 'xss'],
  ])('%s: 403 validate.injection, no payload in the reply', async (_name, input, cls) => {
    const { verdict, decisions } = await run([guard()], input);
    expect(verdict).toMatchObject({ kind: 'respond', code: 'validate.injection', rule: 'shop/guard#api' });
    if (verdict.kind !== 'respond') return;
    expect(verdict.reason).toMatch(new RegExp(`^the request looks like an injection attack \\(${cls}, score \\d+, threshold 5\\)$`));
    expect(decisions).toEqual(['shop/guard#api failed']);
  });

  it('benign traffic with quotes, SQL words and markup passes, and every byte reaches the app', async () => {
    const body = JSON.stringify({ name: "Conan O'Brien", note: 'Please select the best option from the menu; drop it at the door -- thanks!', html: '&lt;b&gt;bold&lt;/b&gt; <p>hi</p>' });
    const { verdict, t, decisions } = await run([guard()], {
      path: '/api/profile',
      query: 'q=O%27Brien&sort=name',
      headers: { ...json, 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0' },
      body,
    });
    expect(verdict).toEqual({ kind: 'continue' });
    expect(decisions).toEqual(['shop/guard#api passed']);
    expect((await t.forwarded())!.toString()).toBe(body);
  });

  it('the path, query and headers are decided without reading the body', async () => {
    const { verdict, synchronous, t } = await run([guard()], { path: '/api/x', query: 'q=%3Cscript%3E', headers: json, body: '{"a":"b"}' });
    expect(synchronous).toBe(true);
    expect(verdict).toMatchObject({ code: 'validate.injection' });
    expect(t.produced()).toBe(0);
  });

  it('the score is per call: two hints in two places refuse together, each alone does not', async () => {
    // A value opening with one ../ (4) in the query, and a script URL with a space before its call (3) in the body.
    const hop = { path: '/api/x', query: 'next=..%2Fhome' };
    const body = JSON.stringify({ link: 'javascript: go(1)' });
    expect((await run([guard()], { ...hop, method: 'GET' })).verdict).toEqual({ kind: 'continue' });
    expect((await run([guard()], { path: '/api/x', headers: json, body })).verdict).toEqual({ kind: 'continue' });
    const both = await run([guard()], { ...hop, headers: json, body });
    expect(both.verdict).toMatchObject({ code: 'validate.injection', reason: expect.stringContaining('score 7') });
  });

  it('the log line has the class, score, signatures, where, and a cut sample; never the whole payload', async () => {
    const payload = `' UNION SELECT username, password FROM users WHERE '1'='1' -- ${'x'.repeat(500)}`;
    const { lines } = await run([guard()], { path: '/api/search', headers: json, body: JSON.stringify({ filters: [{ q: payload }] }) });
    expect(lines).toHaveLength(1);
    expect(lines[0]!.message).toBe('validation refused the call');
    expect(lines[0]!.fields).toMatchObject({
      code: 'validate.injection',
      rule: 'shop/guard#api',
      injection_class: 'sql',
      injection_score: expect.any(Number),
      injection_location: 'body:/filters/0/q',
      injection_sample: `${payload.slice(0, 48)}…`,
    });
    expect(lines[0]!.fields.injection_signatures).toEqual(expect.arrayContaining(['sql.union_select', 'sql.quote_string_compare']));
    expect(JSON.stringify(lines[0]!.fields)).not.toContain('x'.repeat(100));
  });

  it('threshold and classes are per rule', async () => {
    const input = { method: 'GET', path: '/api/x', query: "q=admin'--" };
    expect((await run([guard({ threshold: 20 })], input)).verdict).toEqual({ kind: 'continue' });
    expect((await run([guard({ classes: ['xss', 'command'] })], input)).verdict).toEqual({ kind: 'continue' });
    expect((await run([guard({ inspect: ['path', 'body'] })], input)).verdict).toEqual({ kind: 'continue' });
    expect((await run([guard()], input)).verdict).toMatchObject({ code: 'validate.injection' });
  });

  it('binary and multipart bodies are not inspected (not read at all for this check)', async () => {
    const { verdict, synchronous } = await run([guard()], { path: '/api/upload', headers: { 'content-type': 'application/octet-stream' }, body: '<script>alert(1)</script>' });
    expect(verdict).toEqual({ kind: 'continue' });
    expect(synchronous).toBe(true);
  });

  it('a JSON content type with a body that is not JSON fails closed: it cannot be inspected', async () => {
    const { verdict } = await run([guard()], { path: '/api/x', headers: json, body: "{'<script>': 1}" });
    expect(verdict).toMatchObject({ code: 'validate.malformed_json' });
  });

  it('more text than maxInspectBytes is refused 413 unread, not half inspected', async () => {
    const body = JSON.stringify({ pad: 'a b '.repeat(600), tail: '<script>alert(1)</script>' });
    const { verdict } = await run([guard({ maxInspectBytes: '1KiB' })], { path: '/api/x', headers: json, body });
    expect(verdict).toMatchObject({ code: 'validate.body_too_large', reason: 'the call carries more than 1024 bytes of text to inspect for injection (maxInspectBytes): refused unread' });
  });

  it('is checked before the schema: an attack that also breaks the schema is reported as what it is', async () => {
    const doc = validation('both', { rules: [{ name: 'r', injection: {}, jsonSchema: { type: 'object', properties: { q: { type: 'integer' } } } }] });
    const { verdict } = await run([doc], { headers: json, body: JSON.stringify({ q: "1' OR '1'='1" }) });
    expect(verdict).toMatchObject({ code: 'validate.injection' });
  });
});

describe('injection detection modes', () => {
  const attack = { method: 'GET', path: '/api/x', query: 'q=%3Cscript%3Ealert(1)%3C%2Fscript%3E' };

  it('log: the call goes on, one log line says what was found, the rule is counted as logged', async () => {
    const { verdict, t, lines, decisions, shadow } = await run([guard({ mode: 'log' })], attack);
    expect(verdict).toEqual({ kind: 'continue' });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ message: 'validation: injection detected (log mode, not refused)', fields: { code: 'validate.injection', log_only: true, injection_class: 'xss' } });
    expect(decisions).toEqual(['shop/guard#api logged']);
    expect(shadow).toEqual([]);
    expect(t.call.annotations.shadowDenials).toBeUndefined();
  });

  it('shadow: the call goes on, counted and annotated as a shadow denial, while the rule`s other checks still enforce', async () => {
    const doc = validation('guard', { rules: [{ name: 'api', match: { paths: ['/api/*'] }, requiredHeaders: ['x-tenant'], injection: { mode: 'shadow' } }] });
    const passed = await run([doc], { ...attack, headers: { 'x-tenant': 'a' } });
    expect(passed.verdict).toEqual({ kind: 'continue' });
    expect(passed.t.call.annotations.shadowDenials).toEqual(['shop/guard#api']);
    expect(passed.shadow).toEqual(['shop/guard#api']);
    expect(passed.decisions).toEqual(['shop/guard#api shadow_failed']);
    expect(passed.lines[0]).toMatchObject({ message: 'validation: shadow rule would refuse', fields: { shadow: true, code: 'validate.injection' } });
    expect((await run([doc], attack)).verdict).toMatchObject({ code: 'validate.missing_header' });
  });

  it('shadow, then the schema of the same rule refuses: the call is refused and counted as failed', async () => {
    const doc = validation('g', { rules: [{ name: 'r', injection: { mode: 'shadow' }, jsonSchema: { type: 'object', required: ['id'] } }] });
    const { verdict, decisions, shadow } = await run([doc], { headers: json, body: JSON.stringify({ q: '<script>x</script>' }) });
    expect(verdict).toMatchObject({ code: 'validate.schema' });
    expect(decisions).toEqual(['shop/g#r failed']);
    expect(shadow).toEqual(['shop/g#r']);
  });

  it('block in a shadow document is shadow, as every check of a shadow document', async () => {
    const { verdict, decisions, t } = await run([guard({}, 'shadow')], attack);
    expect(verdict).toEqual({ kind: 'continue' });
    expect(decisions).toEqual(['shop/guard#api shadow_failed']);
    expect(t.call.annotations.shadowDenials).toEqual(['shop/guard#api']);
  });
});
