/*
 * npm run bench:user-filter — what a check of your own (a Filter document,
 * run in the QuickJS sandbox) costs per call, in process, next to the same
 * check built in (plain TypeScript on the host). Four checks: a trivial one
 * (`() => ({ allow: true })`), one that reads a header (what bench:filters'
 * user-check row runs through a sidecar), the HMAC-SHA256 signature example of
 * deploy/examples/filters (the host's meshgate.hmacSha256), and the same
 * example with SHA-256 and HMAC in plain JavaScript inside the sandbox
 * (bench/fixtures); built in: node:crypto.
 *
 * Columns (microseconds per call, median over samples of >= 2 ms each):
 *   sandbox call   program.call(): JSON in, guest function, JSON out
 *   filter         the whole stage filter: call view, sandbox call, verdict, metrics
 *   built in       the same check as a plain host Filter
 *
 * Options: --seconds S (per column, default 1)   --json FILE
 */
import { createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import type { CallContext } from '../src/core/call-context.ts';
import { systemClock } from '../src/core/clock.ts';
import type { Filter } from '../src/core/filter.ts';
import { CONTINUE, respond } from '../src/core/verdict.ts';
import { createUserFilterRuntime } from '../src/filters/user-filter/user-filter.ts';
import { programSpecOf } from '../src/policy/filter-sources.ts';
import type { FilterDocument } from '../src/policy/kinds/filter.ts';
import type { PolicyDocument } from '../src/policy/types.ts';
import { createPolicyValidator } from '../src/policy/validate.ts';
import { loadSandboxEngine } from '../src/sandbox/quickjs-sandbox.ts';
import { createSidecarMetrics } from '../src/telemetry/metrics.ts';
import { busyShare } from './lib/machine-load.ts';
import { median } from './lib/stats.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '1' }, json: { type: 'string' } } });
const seconds = Number(values.seconds);

const KEY_HEX = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
const KEY = Buffer.from(KEY_HEX, 'hex');
/** The built-in twin imports its key once, as the sandbox's host does (a raw Buffer key costs ~8 us more per HMAC). */
const KEY_OBJECT = createSecretKey(KEY);

function filterDoc(name: string, source: string, config: Record<string, unknown> = {}): FilterDocument {
  const raw = { apiVersion: 'meshgate.dev/v1', kind: 'Filter', metadata: { name, namespace: 'bench' }, spec: { source, config, budget: { cpuMs: 100 } } };
  const result = createPolicyValidator().validate(raw, { file: 'bench', index: 0 });
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.document.document as PolicyDocument & FilterDocument;
}

function signedCall(): CallContext {
  const timestamp = String(Math.floor(Date.now() / 1000));
  const signature = createHmac('sha256', KEY).update(`POST\n/payments/42\ncurrency=eur\n${timestamp}`).digest('hex');
  return {
    id: 'bench',
    direction: 'inbound',
    startedAt: 0,
    method: 'POST',
    path: '/payments/42',
    query: 'currency=eur',
    authority: 'payments.shop',
    headers: { host: 'payments.shop', 'content-type': 'application/json', 'user-agent': 'bench/1', accept: '*/*', 'x-timestamp': timestamp, 'x-signature': signature, 'x-request-id': 'abc' },
    httpVersion: '1.1',
    isGrpc: false,
    source: { address: '10.0.0.5', port: 1234, principal: 'spiffe://cluster.local/ns/shop/sa/frontend' },
    destination: { service: 'payments', namespace: 'shop' },
    annotations: { retries: 0 },
  };
}

/** Microseconds per call: median of samples of at least 2 ms, after a warm-up. */
function measure(run: () => unknown): number {
  const sample = (): number => {
    let n = 0;
    const start = performance.now();
    let now = start;
    while (now - start < 2) {
      for (let i = 0; i < 16; i++) run();
      n += 16;
      now = performance.now();
    }
    return ((now - start) * 1000) / n;
  };
  const warmUntil = performance.now() + Math.min(500, seconds * 300);
  while (performance.now() < warmUntil) sample();
  const samples: number[] = [];
  const until = performance.now() + seconds * 1000;
  while (performance.now() < until) samples.push(sample());
  return median(samples);
}

const builtInTrivial: Filter = { name: 'built-in', onRequest: () => CONTINUE };
const builtInReadsHeader: Filter = { name: 'built-in', onRequest: (call) => (call.headers['x-bench-deny'] === undefined ? CONTINUE : respond('filter.denied', 'bench')) };
const builtInHmac: Filter = {
  name: 'built-in',
  onRequest(call) {
    const timestamp = call.headers['x-timestamp'];
    const signature = call.headers['x-signature'];
    if (typeof timestamp !== 'string' || typeof signature !== 'string') return respond('filter.denied', 'missing');
    if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return respond('filter.denied', 'expired');
    const expected = createHmac('sha256', KEY_OBJECT).update(`${call.method}\n${call.path}\n${call.query}\n${timestamp}`).digest();
    const given = Buffer.from(signature, 'hex');
    return given.length === expected.length && timingSafeEqual(given, expected) ? CONTINUE : respond('filter.denied', 'invalid');
  },
};

async function main(): Promise<void> {
  const busy = await busyShare(500);
  const hmacSource = await readFile(new URL('../deploy/examples/filters/hmac-signature.ts', import.meta.url), 'utf8');
  const plainJsSource = await readFile(new URL('fixtures/hmac-signature-plain-js.ts', import.meta.url), 'utf8');
  const checks = [
    { name: 'trivial', doc: filterDoc('trivial', 'export default () => ({ allow: true });'), builtIn: builtInTrivial },
    // bench:filters' user-check row: reading any field of the call parses the call view's JSON in the guest, once per call.
    {
      name: 'reads a header',
      doc: filterDoc('reads', "export default (call) => call.headers['x-bench-deny'] === undefined ? { allow: true } : { deny: { code: 'bench' } };"),
      builtIn: builtInReadsHeader,
    },
    { name: 'hmac example', doc: filterDoc('hmac', hmacSource, { key: KEY_HEX, windowSeconds: 300 }), builtIn: builtInHmac },
    { name: 'hmac plain JS', doc: filterDoc('hmac-js', plainJsSource, { key: KEY_HEX, windowSeconds: 300 }), builtIn: builtInHmac },
  ];
  const engine = await loadSandboxEngine();
  const metrics = createSidecarMetrics({ defaultMetrics: false });
  const rows: Array<Record<string, number | string>> = [];
  for (const check of checks) {
    const compiled = await engine.compile(programSpecOf(check.doc));
    if (!compiled.ok) throw new Error(JSON.stringify(compiled.problem));
    const call = signedCall();
    const input = JSON.stringify({
      method: call.method,
      path: call.path,
      query: call.query,
      headers: call.headers,
      source: { address: call.source.address, principal: call.source.principal },
      destination: call.destination,
      auth: null,
      route: null,
    });
    const runtime = createUserFilterRuntime({ clock: systemClock, random: Math.random, metrics });
    await runtime.prepare([check.doc]);
    const filter = runtime.compile([check.doc])['after-authz']!;
    const verdict = filter.onRequest(signedCall());
    if ((verdict as { kind: string }).kind !== 'continue' || check.builtIn.onRequest(signedCall()) !== CONTINUE) throw new Error(`${check.name}: the check did not allow the signed call`);
    rows.push({
      check: check.name,
      'sandbox call': measure(() => compiled.program.call(input)),
      filter: measure(() => filter.onRequest({ ...call, annotations: { retries: 0 } })),
      'built in': measure(() => check.builtIn.onRequest({ ...call, annotations: { retries: 0 } })),
    });
    compiled.program.dispose();
    runtime.close();
  }
  const header = ['check', 'sandbox call', 'filter', 'built in'];
  process.stdout.write(`checks of your own, in process (us per call, median); node ${process.version}, ${cpus().length} CPUs, other load ${(busy * 100).toFixed(0)}%\n`);
  process.stdout.write(`${header.map((h) => h.padStart(14)).join('')}\n`);
  for (const row of rows) process.stdout.write(`${header.map((h) => (typeof row[h] === 'number' ? (row[h] as number).toFixed(2) : String(row[h])).padStart(14)).join('')}\n`);
  if (values.json) await writeFile(values.json, `${JSON.stringify({ node: process.version, cpus: cpus().length, busy, rows }, null, 2)}\n`);
}

await main();
