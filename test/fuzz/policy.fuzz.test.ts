import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { MockAgent } from 'undici';
import { afterAll, expect } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import type { CallContext, RequestBody } from '../../src/core/call-context.ts';
import { REASON_CODES } from '../../src/core/reason-codes.ts';
import type { Verdict } from '../../src/core/verdict.ts';
import { createAuthnRuntime } from '../../src/filters/authn/authn-runtime.ts';
import { createLocalBuckets } from '../../src/filters/ratelimit/local-buckets.ts';
import { createRateLimitRuntime } from '../../src/filters/ratelimit/ratelimit-runtime.ts';
import { createValidateRuntime } from '../../src/filters/validate/validate-filter.ts';
import { buildInboundChain, createInboundRuntimes } from '../../src/inbound/inbound-chain.ts';
import { parsePolicyText } from '../../src/policy/parse-documents.ts';
import { formatPolicyError } from '../../src/policy/policy-error.ts';
import { canonicalJson, compileSnapshot, documentDigest } from '../../src/policy/snapshot.ts';
import type { PolicyDocument } from '../../src/policy/types.ts';
import { createPolicyValidator } from '../../src/policy/validate.ts';
import { checkEnvelope, policyModelValidator } from '../../src/sidecar/policy/subscriber-validate.ts';
import { createFakeClock } from '../helpers/fake-clock.ts';
import { fuzzTarget, timeBudgetMs, timed } from './fuzz-harness.ts';
import { aliasBombLines, editedText, YAML_PIECES } from './text-arbitraries.ts';

/*
 * Fuzzing the policy decoder (YAML text -> validated documents, and the JSON
 * envelope a sidecar receives) and the compiler (validated documents -> the
 * snapshot of a workload and its inbound filter chain). The decoder answers
 * with documents or errors that name file, document and field, never an
 * exception, in bounded time; a document it accepts validates to itself again
 * on the sidecar; the compiler never throws and the chain it builds answers
 * every call with a verdict of its own filters, never filter.error.
 */

const CORPUS = readFileSync(new URL('./corpus/policies.yaml', import.meta.url), 'utf8');
const SEED_DOCS: Array<Record<string, unknown>> = parseAllDocuments(CORPUS).map((d) => d.toJS() as Record<string, unknown>);
const validator = createPolicyValidator();

// ---- inputs -------------------------------------------------------------------

const TEXT_PIECES = [...YAML_PIECES, '\n---\n', '<<: *a\n', '!x ', '0x10', '*', '/', '..', '%2e'];

/** Strings and values that sit at the edges of what the schemas accept. */
const ODD_VALUES: unknown[] = [
  '',
  '*',
  '**',
  '/',
  '/*',
  '/admin*',
  '*admin',
  '/a/../b',
  '/a?b',
  'spiffe://cluster.local/ns/shop/sa/x',
  'spiffe://*',
  '10.0.0.0/8',
  '::/0',
  '0.0.0.0/0',
  '10.0.0.0/33',
  '::ffff:10.0.0.1',
  'fe80::1%eth0',
  'GET',
  'get',
  'CONNECT',
  'a'.repeat(600),
  'a'.repeat(9000),
  '(a+)+$',
  '^(a|a)*$',
  '(?<x>a)\\k<x>',
  '[',
  '\\',
  '(?=a)',
  '\\p{L}+',
  '#/$defs/tag',
  '#/definitions/none',
  'https://evil.example/s.json',
  'http://localhost/jwks',
  '5s',
  '0s',
  '-1s',
  '1.5s',
  '99999999h',
  '10MiB',
  '0B',
  'header:x',
  'claim:sub',
  'claim:',
  'source.ip',
  'request.auth.claims[role]',
  'request.headers[]',
  '__proto__',
  'constructor',
  'toString',
  '\u0000',
  'é',
  '\u2028',
  '2026-02-30',
  '2030-06-30T00:00:00Z',
  'ALLOW',
  'DENY',
  'AUDIT',
  'shadow',
  'enforce',
  'global',
  'local',
  'application/json',
  'text/*',
  '*/*',
  0,
  -1,
  1,
  1.5,
  65536,
  2 ** 31,
  2 ** 53,
  1e308,
  -0,
  true,
  false,
  null,
  [],
  {},
  [{}],
  { type: 'string' },
  { $ref: '#' },
  { $ref: '#/properties/a' },
  { pattern: '(a+)+$' },
  { format: 'email' },
  { type: 'nope' },
  { minimum: 'x' },
  { properties: { a: { $ref: '#/$defs/missing' } } },
  { $defs: { a: { $ref: '#/$defs/a' } }, $ref: '#/$defs/a' },
  { allOf: [{ $ref: '#' }] },
  { kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA' },
  { kty: 'RSA', n: 'AQAB', e: 'AQAB' },
];

type Path = Array<string | number>;

function nodePaths(value: unknown, path: Path = [], out: Path[] = []): Path[] {
  out.push(path);
  if (Array.isArray(value)) value.forEach((item, i) => nodePaths(item, [...path, i], out));
  else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) nodePaths(v, [...path, k], out);
  return out;
}

/** A copy of `root` with the node at `path` replaced (or removed, for `undefined`). */
function replaced(root: unknown, path: Path, value: unknown): unknown {
  if (path.length === 0) return value;
  const [head, ...rest] = path;
  if (Array.isArray(root)) {
    const copy = [...root];
    if (value === undefined && rest.length === 0) copy.splice(head as number, 1);
    else copy[head as number] = replaced(root[head as number], rest, value);
    return copy;
  }
  const copy = { ...(root as Record<string, unknown>) };
  if (value === undefined && rest.length === 0) delete copy[head as string];
  else copy[head as string] = replaced(copy[head as string], rest, value);
  return copy;
}

const newValue = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...ODD_VALUES) },
  { weight: 1, arbitrary: fc.constant(undefined) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
  // Another node of a seed document: valid somewhere, maybe not here.
  { weight: 3, arbitrary: fc.constantFrom(...SEED_DOCS.flatMap((d) => nodePaths(d).map((p) => p.reduce<unknown>((n, k) => (n as Record<string | number, unknown>)[k], d)))) },
);

/** A seed document with a few nodes replaced, removed or grafted from elsewhere. */
const mutatedDocument = fc.tuple(fc.nat({ max: SEED_DOCS.length - 1 }), fc.array(fc.tuple(fc.nat(), newValue), { minLength: 1, maxLength: 4 })).map(([which, edits]) => {
  let doc: unknown = SEED_DOCS[which];
  for (const [at, value] of edits) {
    const paths = nodePaths(doc);
    doc = replaced(doc, paths[at % paths.length]!, value);
  }
  return doc;
});

/** The corpus text with random character edits. */
const mutatedText = editedText(CORPUS, { pieces: TEXT_PIECES, maxRemove: 16, maxInsert: 6, maxEdits: 10 });

/** Texts past the limits: alias bombs, deep nesting, huge lists and strings, many documents. */
const hostileText = fc.oneof(
  fc.integer({ min: 2, max: 10 }).map((width) => `apiVersion: meshgate.dev/v1\nkind: IPAccessPolicy\nmetadata: { name: a, namespace: b }\nspec: { deny: *a8 }\n${aliasBombLines(width).join('\n')}\n`),
  fc.constantFrom('spec: &s { rules: [*s] }\nkind: AuthorizationPolicy\n', 'a: &a [*a]\n', '&a [*a]\n'),
  fc.integer({ min: 30, max: 5000 }).map((depth) => `apiVersion: meshgate.dev/v1\nkind: Route\nmetadata: { name: a, namespace: b }\nspec: ${'['.repeat(depth)}${']'.repeat(depth)}\n`),
  fc
    .integer({ min: 200, max: 3000 })
    .map((n) => stringify({ ...SEED_DOCS[1], spec: { action: 'DENY', rules: Array.from({ length: n }, (_, i) => ({ name: `r${i}`, to: [{ paths: [`/p${i}*`] }] })) } })),
  fc.integer({ min: 100, max: 2000 }).map((n) => Array.from({ length: n }, (_, i) => stringify({ ...SEED_DOCS[4], metadata: { name: `d${i % 50}`, namespace: 'shop' } })).join('---\n')),
  fc.integer({ min: 10_000, max: 400_000 }).map((n) => stringify({ ...SEED_DOCS[4], spec: { deny: [`10.0.0.0/8${'0'.repeat(n)}`] } })),
);

const policyText = fc.oneof(
  { weight: 4, arbitrary: fc.array(mutatedDocument, { minLength: 1, maxLength: 4 }).map((docs) => docs.map((d) => stringify(d)).join('---\n')) },
  { weight: 1, arbitrary: fc.array(mutatedDocument, { minLength: 1, maxLength: 2 }).map((docs) => docs.map((d) => JSON.stringify(d)).join('\n---\n')) },
  { weight: 3, arbitrary: mutatedText },
  { weight: 1, arbitrary: hostileText },
);

// ---- the decoder ----------------------------------------------------------------

const ONE_LINE = /^[^\n\r\u0085\u2028\u2029]*$/;

fuzzTarget<string>({
  name: 'policy-decode',
  arbitrary: policyText,
  shortRuns: 500,
  shortMs: 3000,
  check(text) {
    const file = 'policies/shop.yaml';
    const { value: result, ms } = timed(() => parsePolicyText(text, file, { validator }));
    expect(ms, `decoding ${text.length} characters took ${ms.toFixed(0)} ms`).toBeLessThan(timeBudgetMs(text.length));
    for (const error of result.errors) {
      expect(error.source.file).toBe(file);
      expect(Number.isInteger(error.source.index) && error.source.index >= 0).toBe(true);
      expect(typeof error.field === 'string' && error.field.length > 0, JSON.stringify(error)).toBe(true);
      expect(typeof error.reason === 'string' && error.reason.length > 0, JSON.stringify(error)).toBe(true);
      expect(formatPolicyError(error), 'one line').toMatch(ONE_LINE);
      expect(formatPolicyError(error).length).toBeLessThan(1000);
    }
    // The same text as a document a sidecar receives on the stream: a verdict, never an exception.
    const envelope = checkEnvelope({ kind: 'AuthorizationPolicy', namespace: 'shop', name: 'orders-allow', json: text, digest: '' }, policyModelValidator(validator));
    if (!envelope.ok) for (const e of envelope.errors) expect(typeof e.field === 'string' && typeof e.reason === 'string' && e.reason.length > 0).toBe(true);
    const keys = result.documents.map((d) => d.key);
    expect(new Set(keys).size, 'a key twice').toBe(keys.length);
    for (const valid of result.documents) {
      expect(valid.digest).toBe(documentDigest(valid.document));
      // What the server sends, the sidecar accepts unchanged: validation is idempotent.
      const { metadata, kind } = valid.document;
      const received = checkEnvelope({ kind, namespace: metadata.namespace, name: metadata.name, json: canonicalJson(valid.document), digest: valid.digest }, policyModelValidator(validator));
      expect(received.ok, JSON.stringify(received)).toBe(true);
      if (received.ok) expect(documentDigest(received.document)).toBe(valid.digest);
    }
  },
});

// ---- the compiler -----------------------------------------------------------------

interface CompileInput {
  documents: unknown[];
  calls: CallInput[];
}

interface CallInput {
  method: string;
  path: string;
  headers: Record<string, string>;
  address: string;
  principal: string | undefined;
  body: string | undefined;
}

const callArb: fc.Arbitrary<CallInput> = fc.record({
  method: fc.constantFrom('GET', 'POST', 'DELETE', 'OPTIONS'),
  path: fc.constantFrom('/', '/orders', '/orders/1', '/admin', '/admin/x', '/public/a', '/v2/items', '/items/7', '/shop.v1.Orders/Get'),
  headers: fc.dictionary(
    fc.constantFrom('authorization', 'x-tenant', 'content-type', 'x-request-id', 'x-canary', 'cookie', 'x-forwarded-for', 'x-jwt-claims'),
    fc.oneof(
      fc.constantFrom('Bearer a.b.c', 'Bearer eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIn0.x', 'acme', 'application/json', 'text/plain', 'session=x', '203.0.113.9, 10.0.0.1', 'yes'),
      fc.string({ maxLength: 20 }),
    ),
    { maxKeys: 4 },
  ),
  address: fc.constantFrom('10.0.0.5', '203.0.113.7', '127.0.0.1', '::1', '2001:db8::1'),
  principal: fc.constantFrom('spiffe://cluster.local/ns/shop/sa/frontend', 'spiffe://cluster.local/ns/ops/sa/admin', undefined),
  body: fc.option(fc.oneof(fc.constantFrom('{"item":"a-1","count":3}', '{"item":"x","extra":1}', '[]', '{', 'null', '{"tags":["a","b"]}'), fc.string({ maxLength: 40 })), { nil: undefined }),
});

function callOf(input: CallInput): CallContext {
  const body: RequestBody | undefined =
    input.body === undefined ? undefined : { present: true, declaredLength: Buffer.byteLength(input.body), read: async () => ({ kind: 'complete', bytes: Buffer.from(input.body!) }) };
  return {
    id: 'fuzz-1',
    direction: 'inbound',
    startedAt: 0,
    method: input.method,
    path: input.path,
    query: '',
    authority: 'orders',
    headers: { host: 'orders', ...input.headers },
    httpVersion: '1.1',
    isGrpc: input.path.startsWith('/shop.'),
    source: { address: input.address, port: 40000, principal: input.principal },
    destination: { service: 'orders', namespace: 'shop' },
    annotations: { retries: 0 },
    ...(body ? { body } : {}),
  };
}

/** The reason codes each stage of the inbound chain may answer with; never filter.error. */
const CHAIN_CODES = new Set(Object.keys(REASON_CODES).filter((code) => /^(ip|authn|authz|ratelimit|validate|policy)\./.test(code)));

// No network from here: a JWKS or introspection fetch fails at once, as an unreachable IdP would.
const offline = new MockAgent();
offline.disableNetConnect();

fuzzTarget<CompileInput>({
  name: 'policy-compile',
  arbitrary: fc.record({ documents: fc.array(mutatedDocument, { minLength: 1, maxLength: 6 }), calls: fc.array(callArb, { minLength: 1, maxLength: 6 }) }),
  shortRuns: 300,
  shortMs: 4000,
  async check({ documents, calls }) {
    // The documents the decoder accepts (one per key), as the policy server would hold them.
    const valid = new Map<string, PolicyDocument>();
    documents.forEach((raw, index) => {
      const result = validator.validate(raw, { file: 'fuzz', index });
      if (result.ok && !valid.has(result.document.key)) valid.set(result.document.key, result.document.document);
    });
    const docs = [...valid.values()];
    const workload = { service: 'orders', namespace: 'shop' };
    const snapshot = compileSnapshot(docs, [], workload);
    // Same documents in another order: same snapshot (replicas agree).
    expect(compileSnapshot([...docs].reverse(), [], workload).version).toBe(snapshot.version);

    const clock = createFakeClock(1_800_000_000_000);
    const chain = buildInboundChain(snapshot.documents, {
      onNoPolicy: 'deny',
      runtimes: {
        ...createInboundRuntimes({ clock, random: () => 0.5, allowWhenNoAuthzPolicy: true }),
        authn: createAuthnRuntime({ random: () => 0.5, clock, dispatcher: offline, secretsDir: '/nonexistent', jwksTimings: { timeoutMs: 200 } }),
        rateLimit: createRateLimitRuntime({ local: createLocalBuckets(1000), clock, random: () => 0.5 }),
        validate: createValidateRuntime({ clock, random: () => 0.5, maxBodyBuffer: 4096 }),
      },
    });
    for (const input of calls) {
      const call = callOf(input);
      let verdict: Verdict = { kind: 'continue' };
      for (const filter of chain) {
        try {
          verdict = await filter.onRequest(call);
        } catch (err) {
          throw new Error(`filter ${filter.name} threw on ${JSON.stringify(input)}: ${(err as Error).stack}`);
        }
        if (verdict.kind === 'respond') {
          expect(CHAIN_CODES.has(verdict.code), `filter ${filter.name} answered ${verdict.code} (${verdict.reason}) for ${JSON.stringify(input)} under ${JSON.stringify(docs)}`).toBe(true);
          break;
        }
      }
    }
  },
});

afterAll(async () => {
  await offline.close();
});
