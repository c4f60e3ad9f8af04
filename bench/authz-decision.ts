/*
 * npm run bench:authz — the cost of one authorization decision, per call, with
 * 10, 1 000 and 10 000 AuthorizationPolicy rules, next to a plain scan of the
 * same compiled rules in the same run (the baseline the index must beat).
 *
 * Rules look like a large mesh's: per-service ALLOW rules for an exact peer
 * principal on a path prefix, exact paths with a header condition, globs from
 * a namespace wildcard, DENY prefixes, principal-only rules, gRPC methods, and
 * a handful of mesh-wide rules with nothing to index (JWT wildcards and claim
 * conditions: the residual list every call checks). Calls are a fixed mix of
 * allowed, denied-by-rule and denied-by-default requests.
 *
 * Columns (microseconds per call, median over samples of >= 2 ms each):
 *   decide        the compiled engine alone (authz-engine.ts: index lookup + predicates)
 *   filter        the whole filter: request facts, decision, decision id, annotations, counters
 *   plain scan    every rule in document order, first DENY then first ALLOW (no index)
 * "compile" is the one-off cost per snapshot (validation excluded).
 *
 * Options: --rules 10,1000,10000   --seconds S (per column, default 1)   --json FILE
 */
import { writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import type { CallContext } from '../src/core/call-context.ts';
import { systemClock } from '../src/core/clock.ts';
import { compileAuthorization } from '../src/filters/authz/authz-engine.ts';
import { createAuthzFilter, createAuthzRuntime } from '../src/filters/authz/authz-filter.ts';
import type { AuthzRequest } from '../src/filters/authz/authz-request.ts';
import { authzRequestOf } from '../src/filters/authz/authz-request.ts';
import type { AuthzAction, CompiledRule } from '../src/filters/authz/authz-rules.ts';
import { compileRule, ruleMatches } from '../src/filters/authz/authz-rules.ts';
import { isKind } from '../src/policy/typed-documents.ts';
import type { PolicyDocument } from '../src/policy/types.ts';
import { createPolicyValidator } from '../src/policy/validate.ts';
import { createSidecarMetrics } from '../src/telemetry/metrics.ts';
import { busyShare } from './lib/machine-load.ts';
import { median } from './lib/stats.ts';

const { values } = parseArgs({
  options: {
    rules: { type: 'string', default: '10,1000,10000' },
    seconds: { type: 'string', default: '1' },
    json: { type: 'string' },
  },
});
const ruleCounts = values.rules.split(',').map(Number);
const seconds = Number(values.seconds);

const RESIDUAL_RULES = 5;
const principalOf = (i: number) => `spiffe://cluster.local/ns/ns${i % 50}/sa/svc${i}`;

/** Rule `i` of a synthetic mesh; `kind` cycles so every count has the same mix. */
function ruleFor(i: number): { action: AuthzAction; rule: Record<string, unknown> } {
  const name = `r${i}`;
  switch (i % 10) {
    case 0:
    case 1:
    case 2:
    case 3:
      return { action: 'ALLOW', rule: { name, from: [{ principals: [principalOf(i)] }], to: [{ methods: ['GET'], paths: [`/api/v1/svc${i}/*`] }] } };
    case 4:
    case 5:
      return { action: 'ALLOW', rule: { name, to: [{ methods: ['GET', 'POST'], paths: [`/api/v1/svc${i}/items/${i}`] }], when: [{ key: 'request.headers[x-tenant]', values: [`t${i % 7}`] }] } };
    case 6:
      return { action: 'ALLOW', rule: { name, from: [{ namespaces: [`ns${i % 50}*`] }], to: [{ paths: [`/api/v1/svc${i}/*/items`] }] } };
    case 7:
      return { action: 'DENY', rule: { name, to: [{ paths: [`/internal/svc${i}*`] }] } };
    case 8:
      return { action: 'ALLOW', rule: { name, from: [{ principals: [principalOf(i)] }] } };
    default:
      return { action: 'ALLOW', rule: { name, to: [{ grpc: { service: `pkg${i}.Service`, method: 'Get' } }] } };
  }
}

function residualRules(): Array<{ action: AuthzAction; rule: Record<string, unknown> }> {
  return [
    { action: 'DENY', rule: { name: 'banned-users', from: [{ requestPrincipals: ['*/banned'] }] } },
    { action: 'DENY', rule: { name: 'no-guests-writing', to: [{ methods: ['DELETE'] }], when: [{ key: 'request.auth.claims[role]', values: ['guest'] }] } },
    { action: 'ALLOW', rule: { name: 'ops', from: [{ namespaces: ['ops'] }] } },
    { action: 'ALLOW', rule: { name: 'idp-admins', from: [{ requestPrincipals: ['https://idp.example/*'] }], when: [{ key: 'request.auth.claims[groups]', values: ['admins'] }] } },
    { action: 'ALLOW', rule: { name: 'health', to: [{ paths: ['*'], methods: ['HEAD'] }] } },
  ].slice(0, RESIDUAL_RULES) as Array<{ action: AuthzAction; rule: Record<string, unknown> }>;
}

/** Documents of at most 1000 rules (the validator's limit), validated like a sidecar's. */
function documentsFor(count: number): PolicyDocument[] {
  const validator = createPolicyValidator();
  const all = [...residualRules(), ...Array.from({ length: Math.max(0, count - RESIDUAL_RULES) }, (_, i) => ruleFor(i))];
  const byAction = new Map<AuthzAction, Record<string, unknown>[]>();
  for (const { action, rule } of all) {
    const list = byAction.get(action) ?? [];
    list.push(rule);
    byAction.set(action, list);
  }
  const docs: PolicyDocument[] = [];
  for (const [action, rules] of byAction) {
    for (let start = 0; start < rules.length; start += 1000) {
      const raw = {
        apiVersion: 'meshgate.dev/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: `${action.toLowerCase()}-${start / 1000}`, namespace: 'mesh' },
        spec: { action, rules: rules.slice(start, start + 1000) },
      };
      const result = validator.validate(raw, { file: 'bench', index: docs.length });
      if (!result.ok) throw new Error(`bench policy invalid: ${result.errors.map((e) => `${e.field}: ${e.reason}`).join('; ')}`);
      docs.push(result.document.document);
    }
  }
  return docs;
}

function callFor(i: number, count: number): CallContext {
  const n = Math.max(1, count - RESIDUAL_RULES);
  const svc = (i * 7919) % n; // spread over the rules
  const kind = i % 8;
  const base = {
    id: `r${i}`,
    direction: 'inbound' as const,
    startedAt: 0,
    query: '',
    authority: 'orders.mesh:8080',
    httpVersion: '1.1' as const,
    destination: { service: 'orders', namespace: 'mesh' },
    annotations: { retries: 0 },
  };
  const peer = (p: string | undefined) => ({ address: '10.1.2.3', port: 40000, principal: p });
  switch (kind) {
    case 0: // allowed by a principal + prefix rule (or a near miss when svc is not that kind)
      return { ...base, method: 'GET', path: `/api/v1/svc${svc - (svc % 10)}/orders/42`, headers: {}, isGrpc: false, source: peer(principalOf(svc - (svc % 10))) };
    case 1: // exact path with a header condition
      return {
        ...base,
        method: 'POST',
        path: `/api/v1/svc${svc - (svc % 10) + 4}/items/${svc - (svc % 10) + 4}`,
        headers: { 'x-tenant': `t${(svc - (svc % 10) + 4) % 7}` },
        isGrpc: false,
        source: peer(principalOf(1)),
      };
    case 2: // a DENY prefix
      return { ...base, method: 'GET', path: `/internal/svc${svc - (svc % 10) + 7}/keys`, headers: {}, isGrpc: false, source: peer(principalOf(2)) };
    case 3: // gRPC
      return {
        ...base,
        method: 'POST',
        path: `/pkg${svc - (svc % 10) + 9}.Service/Get`,
        headers: { 'content-type': 'application/grpc' },
        isGrpc: true,
        httpVersion: '2',
        source: peer(principalOf(3)),
      };
    case 4: // a principal-only rule
      return { ...base, method: 'PUT', path: `/anything/${i}`, headers: {}, isGrpc: false, source: peer(principalOf(svc - (svc % 10) + 8)) };
    case 5: // no rule matches: denied by default
      return { ...base, method: 'GET', path: `/api/v1/unknown/${i}`, headers: {}, isGrpc: false, source: peer('spiffe://cluster.local/ns/x/sa/stranger') };
    case 6: // a glob
      return {
        ...base,
        method: 'GET',
        path: `/api/v1/svc${svc - (svc % 10) + 6}/7/items`,
        headers: {},
        isGrpc: false,
        source: peer(`spiffe://cluster.local/ns/ns${(svc - (svc % 10) + 6) % 50}/sa/any`),
      };
    default: // plaintext caller on a deep path
      return { ...base, method: 'GET', path: `/static/assets/v${i}/app.js`, headers: {}, isGrpc: false, source: peer(undefined) };
  }
}

/** The baseline: every rule, in document order, no index. */
function plainScan(docs: readonly PolicyDocument[]): (req: AuthzRequest) => boolean {
  const rules: CompiledRule[] = [];
  let allowPolicies = 0;
  for (const doc of docs) {
    if (!isKind(doc, 'AuthorizationPolicy')) continue;
    if (doc.spec.action === 'ALLOW') allowPolicies++;
    doc.spec.rules.forEach((rule, index) =>
      rules.push(compileRule(rule, { policy: `${doc.metadata.namespace}/${doc.metadata.name}`, index, ordinal: rules.length, action: doc.spec.action, mode: doc.spec.mode })),
    );
  }
  const deny = rules.filter((r) => r.action === 'DENY');
  const allow = rules.filter((r) => r.action === 'ALLOW');
  return (req) => {
    for (const r of deny) if (ruleMatches(r, req)) return false;
    if (allowPolicies === 0) return false;
    for (const r of allow) if (ruleMatches(r, req)) return true;
    return false;
  };
}

/**
 * Microseconds per call: median over samples of at least 2 ms, for `seconds`.
 * `cpu` is this process's CPU time per call (what the decision costs even on a
 * machine other processes keep busy); `wall` is elapsed time per call.
 */
function measure<T>(inputs: readonly T[], run: (input: T) => unknown): { cpu: number; wall: number } {
  let sink = 0;
  const sample = (): { cpu: number; wall: number } => {
    let n = 0;
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    let elapsed = 0n;
    while (elapsed < 2_000_000n) {
      for (let k = 0; k < 64; k++) {
        if (run(inputs[(n + k) % inputs.length]!)) sink++;
      }
      n += 64;
      elapsed = process.hrtime.bigint() - start;
    }
    const cpu = process.cpuUsage(cpuStart);
    return { cpu: (cpu.user + cpu.system) / n, wall: Number(elapsed) / 1000 / n };
  };
  const warmUntil = performance.now() + Math.min(500, seconds * 300);
  while (performance.now() < warmUntil) sample();
  const samples: Array<{ cpu: number; wall: number }> = [];
  const until = performance.now() + seconds * 1000;
  while (performance.now() < until) samples.push(sample());
  if (sink < 0) console.log(sink);
  return { cpu: median(samples.map((x) => x.cpu)), wall: median(samples.map((x) => x.wall)) };
}

const fmt = (us: number) => (us < 10 ? us.toFixed(2) : us < 100 ? us.toFixed(1) : us.toFixed(0));

interface Row {
  rules: number;
  compileMs: number;
  decideUs: { cpu: number; wall: number };
  filterUs: { cpu: number; wall: number };
  scanUs: { cpu: number; wall: number };
  allowedShare: number;
  /** Share of all CPUs other processes kept busy just before the row. */
  busyBefore: number;
}

const rows: Row[] = [];
console.log(`authz decision cost — node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}; ${seconds}s per column\n`);
for (const count of ruleCounts) {
  const busyBefore = await busyShare(500);
  const docs = documentsFor(count);
  const compileStart = performance.now();
  const engine = compileAuthorization(docs, { allowWhenNoPolicy: false });
  const compileMs = performance.now() - compileStart;
  const calls = Array.from({ length: 1024 }, (_, i) => callFor(i, count));
  const requests = calls.map(authzRequestOf);
  const filter = createAuthzFilter(docs, createAuthzRuntime({ clock: systemClock, random: Math.random, allowWhenNoPolicy: false, metrics: createSidecarMetrics({ defaultMetrics: false }) }));
  const scan = plainScan(docs);
  // The index must agree with the scan on every call it is timed on.
  for (const req of requests) if (engine.decide(req).allow !== scan(req)) throw new Error(`index and scan disagree on ${req.method} ${req.path}`);
  const allowedShare = requests.filter((r) => engine.decide(r).allow).length / requests.length;
  const decideUs = measure(requests, (req) => engine.decide(req).allow);
  const filterUs = measure(calls, (c) => filter.onRequest(c));
  const scanUs = measure(requests, scan);
  rows.push({ rules: engine.ruleCount, compileMs, decideUs, filterUs, scanUs, allowedShare, busyBefore });
}

console.log('| rules | compile (once per snapshot) | decide, indexed (µs/call, p50) | whole filter (µs/call, p50) | plain scan (µs/call, p50) | scan ÷ indexed | other load |');
console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  console.log(
    `| ${r.rules.toLocaleString('en-US')} | ${r.compileMs.toFixed(1)} ms | ${fmt(r.decideUs.cpu)} | ${fmt(r.filterUs.cpu)} | ${fmt(r.scanUs.cpu)} | ${(r.scanUs.cpu / r.decideUs.cpu).toFixed(1)}× | ${Math.round(r.busyBefore * 100)}% |`,
  );
}
console.log(
  '\nµs are CPU time of this process per call (wall-clock figures are in --json). "other load": share of the CPUs other processes used just before the row; above ~10% every figure is inflated.',
);
console.log(
  `\ncalls: 1024, a fixed mix (${Math.round((rows[0]?.allowedShare ?? 0) * 100)}% allowed with ${rows[0]?.rules ?? 0} rules; ${Math.round((rows.at(-1)?.allowedShare ?? 0) * 100)}% with ${rows.at(-1)?.rules ?? 0})`,
);
if (values.json) await writeFile(values.json, `${JSON.stringify({ node: process.version, cpu: cpus()[0]?.model, cpus: cpus().length, seconds, rows }, null, 2)}\n`);
