import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CallContext } from '../src/core/call-context.ts';
import { InjectionScan } from '../src/filters/validate/injection.ts';
import { INJECTION_CLASSES } from '../src/filters/validate/injection-signatures.ts';
import { scanJson } from '../src/filters/validate/safe-json.ts';
import { createValidateFilter, createValidateRuntime } from '../src/filters/validate/validate-filter.ts';
import { DEFAULT_JSON_LIMITS } from '../src/policy/kinds/validation-policy.ts';
import type { PolicyDocument } from '../src/policy/types.ts';
import { createPolicyValidator } from '../src/policy/validate.ts';
import { installExitHooks, runBench, startEchoUpstream, writeReport } from './lib/harness.ts';
import { busyShare } from './lib/machine-load.ts';
import { createProcessGroup, findExecutable } from './lib/processes.ts';
import { readSettings } from './lib/settings.ts';
import { median } from './lib/stats.ts';
import type { TargetContext } from './lib/target.ts';
import { startMeshgateWithPolicy } from './lib/target-meshgate-policy.ts';

/*
 * npm run bench:injection: what injection detection (ValidationPolicy
 * `injection`) costs on a 10 KiB JSON body.
 *  1. In process, µs per call: the safe-JSON pass, the injection scan of the
 *     parsed body (a realistic body: ids, emails, dates, prose with quotes; and
 *     one where every string is prose), and the whole validate filter on a
 *     POST with a jsonSchema rule, with and without `injection`.
 *  2. Through one sidecar (inbound hop, policy from a snapshot file), req/s and
 *     p99 for POSTs of that body, schema only vs schema + injection (wrk with a
 *     Lua body; skipped without wrk or with BENCH_INPROCESS_ONLY=1).
 * BENCH_DURATION, BENCH_CONNECTIONS, BENCH_RUNS as for npm run bench.
 * Writes bench/results/injection-latest.json.
 */

const RESULTS_FILE = fileURLToPath(new URL('results/injection-latest.json', import.meta.url));

const PROSE = [
  "Please leave it at the door; it's fragile -- thanks!",
  "Conan O'Brien",
  'Select the best option from the menu and update your profile.',
  'Ring twice (flat 2/1), or call +44 20 7946 0958',
  '&lt;b&gt;Sale&lt;/b&gt; ends Sunday',
  'Works with iPhone 12/13/14; battery 5000mAh',
  'Deploy with `npm run build && npm test`',
  'See https://example.com/docs?section=a&lang=en#intro',
  "5/5 - 'best purchase ever', would recommend",
  'Gift wrap, please: "Happy birthday, Sam!"',
];

/** ~10 KiB of orders: `proseOnly` makes every string a sentence (the scanner's busiest realistic case). */
function body(proseOnly: boolean): string {
  const orders = [];
  for (let i = 0; JSON.stringify({ orders }).length < 10 * 1024; i++) {
    const p = (k: number) => PROSE[(i * 7 + k) % PROSE.length]!;
    orders.push(
      proseOnly
        ? { id: p(0), customer: { name: p(1), email: p(2) }, note: p(3), tags: [p(4), p(5)], created: p(6) }
        : {
            id: `ORD-${1000 + i}`,
            customer: { name: p(1), email: `user${i}@example.com` },
            note: p(3),
            tags: ['gift', 'express'],
            qty: i,
            price: 19.99,
            created: `2024-01-${10 + (i % 20)}T10:30:00Z`,
          },
    );
  }
  return JSON.stringify({ orders });
}

function documents(injection: boolean): PolicyDocument[] {
  const validator = createPolicyValidator();
  const rule = {
    name: 'orders',
    match: { paths: ['/orders'], methods: ['POST'] },
    jsonSchema: { type: 'object', required: ['orders'], properties: { orders: { type: 'array', maxItems: 1000 } } },
    ...(injection ? { injection: {} } : {}),
  };
  const raw = { apiVersion: 'meshgate.dev/v1', kind: 'ValidationPolicy', metadata: { name: 'orders-input', namespace: 'default' }, spec: { rules: [rule] } };
  const result = validator.validate(raw, { file: 'bench', index: 0 });
  if (!result.ok) throw new Error(result.errors.map((e) => `${e.field}: ${e.reason}`).join('; '));
  return [result.document.document];
}

/** µs per call: the median of `runs` timings of `calls` calls, after a warm-up. */
async function perCall(fn: () => unknown, calls = 3000, runs = 5): Promise<number> {
  for (let i = 0; i < calls; i++) await fn();
  const timings: number[] = [];
  for (let r = 0; r < runs; r++) {
    const started = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) await fn();
    timings.push(Number(process.hrtime.bigint() - started) / 1000 / calls);
  }
  return median(timings);
}

async function inProcess(): Promise<Record<string, number>> {
  const settings = { mode: 'block' as const, threshold: 5, classes: new Set(INJECTION_CLASSES), path: true, query: true, body: true, headers: [], maxInspectBytes: 65_536 };
  const realistic = body(false);
  const prose = body(true);
  const bytes = Buffer.from(realistic);
  const filterCall = (filter: ReturnType<typeof createValidateFilter>) => () => {
    const call = {
      id: 'b',
      direction: 'inbound',
      startedAt: 0,
      method: 'POST',
      path: '/orders',
      query: 'page=2&sort=created',
      authority: 'orders',
      headers: { 'content-type': 'application/json', 'content-length': String(bytes.length) },
      httpVersion: '1.1',
      isGrpc: false,
      source: { address: '10.0.0.1', port: 1, principal: undefined },
      destination: { service: 'orders', namespace: 'default' },
      annotations: { retries: 0 },
      body: { present: true, declaredLength: bytes.length, read: async () => ({ kind: 'complete', bytes }) },
    } as unknown as CallContext;
    return filter.onRequest(call);
  };
  const runtime = createValidateRuntime({ clock: { now: () => 0 } as never, random: Math.random });
  const schemaOnly = createValidateFilter(documents(false), runtime);
  const withInjection = createValidateFilter(documents(true), runtime);
  const parsed = JSON.parse(realistic) as unknown;
  const parsedProse = JSON.parse(prose) as unknown;
  return {
    bodyBytes: bytes.length,
    safeJsonUs: await perCall(() => scanJson(bytes, DEFAULT_JSON_LIMITS)),
    jsonParseUs: await perCall(() => JSON.parse(realistic)),
    injectionScanUs: await perCall(() => new InjectionScan(settings).json(parsed)),
    injectionScanProseUs: await perCall(() => new InjectionScan(settings).json(parsedProse)),
    filterSchemaOnlyUs: await perCall(filterCall(schemaOnly)),
    filterSchemaInjectionUs: await perCall(filterCall(withInjection)),
  };
}

interface SidecarRow {
  readonly id: string;
  readonly rps: number;
  readonly p99Ms: number;
  readonly non2xx: number;
}

/** req/s through one sidecar for POSTs of the body, with wrk and a Lua script carrying it. */
async function throughSidecar(context: TargetContext, injection: boolean, wrk: string, luaFile: string, settings: ReturnType<typeof readSettings>): Promise<SidecarRow> {
  const id = injection ? 'schema+injection' : 'schema only';
  // No AuthorizationPolicy in the snapshot: allow, so the rows differ by the validate filter alone.
  const { start } = await startMeshgateWithPolicy(
    context,
    documents(injection).map((d) => JSON.parse(JSON.stringify(d)) as unknown),
    'bench/injection.ts',
    { authorization: { allowWhenNoPolicy: true } },
  );
  if (!start.ok) throw new Error(`${id}: ${start.reason}`);
  try {
    const runs: { rps: number; p99: number; non2xx: number }[] = [];
    for (let r = 0; r < settings.runs; r++) {
      const out = spawnSync(wrk, ['-t1', `-c${settings.connections}`, `-d${settings.durationS}s`, '--latency', '-s', luaFile, new URL('/orders', start.started.url).href], {
        encoding: 'utf8',
        timeout: (settings.durationS + 30) * 1000,
      });
      const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(out.stdout);
      const p99 = /^\s+99(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$/m.exec(out.stdout);
      const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out.stdout);
      if (!rps || !p99) throw new Error(`unexpected wrk output: ${out.stdout.slice(0, 500)} ${out.stderr.slice(0, 500)}`);
      runs.push({ rps: Number(rps[1]), p99: Number(p99[1]) * ({ us: 0.001, ms: 1, s: 1000 } as Record<string, number>)[p99[2]!]!, non2xx: non2xx ? Number(non2xx[1]) : 0 });
    }
    return { id, rps: median(runs.map((r) => r.rps)), p99Ms: median(runs.map((r) => r.p99)), non2xx: Math.max(...runs.map((r) => r.non2xx)) };
  } finally {
    await start.started.stop();
  }
}

async function main(): Promise<number> {
  const settings = readSettings(process.env);
  const log = (m: string) => process.stderr.write(`[bench:injection] ${m}\n`);
  const busy = await busyShare(1000);
  log(`node ${process.version}, ${cpus().length} CPUs${busy > 0.1 ? `; warning: the machine was ${(busy * 100).toFixed(0)}% busy` : ''}`);
  const micro = await inProcess();
  process.stdout.write(
    `\nin process, 10 KiB JSON body (${micro.bodyBytes} bytes), µs per call (median of 5 x 3000):\n` +
      `  safe-JSON pass (bytes)                   ${micro.safeJsonUs!.toFixed(1)}\n` +
      `  JSON.parse, for scale                    ${micro.jsonParseUs!.toFixed(1)}\n` +
      `  injection scan, realistic body           ${micro.injectionScanUs!.toFixed(1)}\n` +
      `  injection scan, every string prose       ${micro.injectionScanProseUs!.toFixed(1)}\n` +
      `  validate filter, jsonSchema rule         ${micro.filterSchemaOnlyUs!.toFixed(1)}\n` +
      `  validate filter, jsonSchema + injection  ${micro.filterSchemaInjectionUs!.toFixed(1)}\n`,
  );
  const rows: SidecarRow[] = [];
  const wrk = findExecutable('wrk', process.env.PATH);
  if (process.env.BENCH_INPROCESS_ONLY === '1' || wrk === undefined) {
    log(wrk ? 'BENCH_INPROCESS_ONLY=1: no sidecar rows' : 'no wrk on PATH (apt-get install -y wrk): no sidecar rows');
  } else {
    const group = createProcessGroup();
    installExitHooks(group, new AbortController(), log);
    try {
      const upstream = await startEchoUpstream(group, settings);
      const lua = path.join(group.tempDir('meshgate-bench-injection-'), 'post.lua');
      writeFileSync(lua, `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Host"] = "bench"\nwrk.body = [==[${body(false)}]==]\n`);
      for (const injection of [false, true]) {
        log(`sidecar, ${injection ? 'jsonSchema + injection' : 'jsonSchema only'}: ${settings.runs} x ${settings.durationS}s, ${settings.connections} connections`);
        rows.push(await throughSidecar(upstream.context, injection, wrk, lua, settings));
      }
      await upstream.stop();
    } finally {
      await group.stopAll(2000);
    }
    process.stdout.write(`\nthrough one sidecar (inbound), POST of the realistic body, wrk -t1 -c${settings.connections}, median of ${settings.runs} x ${settings.durationS}s:\n`);
    for (const r of rows) process.stdout.write(`  ${r.id.padEnd(18)} ${r.rps.toFixed(0).padStart(7)} req/s   p99 ${r.p99Ms.toFixed(2)} ms${r.non2xx ? `   (${r.non2xx} non-2xx!)` : ''}\n`);
    if (rows.length === 2) process.stdout.write(`  injection on: ${(((rows[1]!.rps - rows[0]!.rps) / rows[0]!.rps) * 100).toFixed(1)}% req/s\n`);
  }
  writeReport(RESULTS_FILE, { generatedAt: new Date().toISOString(), node: process.version, cpus: cpus().length, busyCpuBeforeRun: busy, inProcess: micro, sidecar: rows }, log);
  return 0;
}

runBench('bench:injection', main);
