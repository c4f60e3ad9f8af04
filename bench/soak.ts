import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runBench, writeReport } from './lib/harness.ts';
import { createProcessGroup } from './lib/processes.ts';
import type { CallRecord } from './lib/soak-load.ts';
import { CLASSES, createLoadClients, quantile, startLoad } from './lib/soak-load.ts';
import { LIMITED_PER_SECOND, processFootprint, sidecarState, startSoakMesh } from './lib/soak-mesh.ts';

/*
 * `npm run soak -- --minutes N [--rate R] [--report-every S] [--out FILE]`
 *
 * HTTP/1.1, HTTP/2 and gRPC calls with JWTs over mTLS through two sidecars
 * (frontend outbound -> orders or echo inbound) at a fixed rate, some denied
 * and some rate limited, while certificates rotate (2-minute certificates,
 * renewed at half-life: about once a minute per sidecar) and a policy change is
 * pushed through the policy server's folder every minute. Every --report-every
 * seconds one line: time, calls, errors, p50/p99, RSS and open file
 * descriptors of each sidecar. At the end a summary, also written as JSON
 * (bench/results/soak-<time>.json). Exit 1 when any call erred, a rate limit
 * let too much through, a push was not applied, or a process died.
 */

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '2' },
    rate: { type: 'string', default: '200' },
    'report-every': { type: 'string', default: '30' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});

const HELP = `Usage: npm run soak -- [--minutes N] [--rate R] [--report-every S] [--out FILE]

  --minutes N        how long the load runs (default 2)
  --rate R           calls per second in all, over HTTP/1.1, HTTP/2 and gRPC (default 200)
  --report-every S   seconds between progress lines (default 30)
  --out FILE         the JSON summary (default bench/results/soak-<time>.json)
`;

/** Seconds between polls of each sidecar's /config_dump (certificate serial, policy version). */
const POLL_S = 5;
/** A pushed policy must be in force on every sidecar within this long. */
const PUSH_DEADLINE_S = 30;
/** Before this, RSS is warming up (JIT, pools, caches); growth is measured from here. */
const WARM_UP_S = 60;

interface Window {
  readonly endS: number;
  readonly calls: number;
  readonly errors: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly limitedAllowed: number;
  readonly rssKiB: Record<string, number>;
  readonly fds: Record<string, number>;
}

interface Push {
  readonly generation: number;
  readonly atS: number;
  /** Seconds until each sidecar reported a new policy version; absent while not yet. */
  readonly appliedS: Record<string, number>;
}

const log = (line: string): void => void process.stderr.write(`${line}\n`);
const fmt = (s: number): string => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;

async function main(): Promise<number> {
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const minutes = Number(values.minutes);
  const rate = Number(values.rate);
  const reportEvery = Number(values['report-every']);
  if (!(minutes > 0) || !(rate > 0) || !(reportEvery >= 5)) {
    process.stderr.write(`soak: expected --minutes > 0, --rate > 0 and --report-every >= 5\n${HELP}`);
    return 2;
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const outFile = values.out ?? fileURLToPath(new URL(`results/soak-${stamp}.json`, import.meta.url));

  const group = createProcessGroup();
  const stopOnSignal = (): void => {
    log('soak: interrupted; stopping the mesh');
    group.killAllSync();
    process.exit(130);
  };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  // Whatever ends the run (an error while starting included), no child is left behind.
  process.once('exit', () => group.killAllSync());

  log(`soak: starting the mesh (CA, policy server, 3 sidecars as child processes)`);
  const mesh = await startSoakMesh(group, log);
  let token = await mesh.token();
  const clients = createLoadClients(mesh.frontend.outbound, mesh.echoClient(), () => token);

  // Until the registry push has reached the frontend and every class answers as expected once.
  const warmDeadline = Date.now() + 60_000;
  for (const cls of CLASSES) {
    for (;;) {
      const outcome = await clients.run(cls, 0).catch((err: Error) => ({ status: 'failed', reason: err.message }));
      if (cls.expect.includes(outcome.reason ? `${outcome.status} ${outcome.reason}` : outcome.status)) break;
      if (Date.now() > warmDeadline) throw new Error(`${cls.name}: never answered ${cls.expect.join(' or ')} (last: ${outcome.status} ${outcome.reason ?? ''})`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
  log(`soak: mesh ready; ${rate} calls/s for ${minutes} min (${CLASSES.map((c) => `${c.name} ${c.weight}%`).join(', ')})`);

  const t0 = performance.now();
  const elapsedS = (): number => (performance.now() - t0) / 1000;
  const load = startLoad(clients, rate);
  const windows: Window[] = [];
  const errorKinds = new Map<string, number>();
  /** Outcomes per class: that denied, unauthenticated and limited calls did happen, and how. */
  const byClass = new Map<string, Map<string, number>>(CLASSES.map((c) => [c.name, new Map()]));
  const pushes: Push[] = [];
  const serials = new Map<string, Set<string>>(mesh.sidecars.map((s) => [s.name, new Set<string>()]));
  const versions = new Map<string, string | undefined>();
  const processProblems: string[] = [];
  let totalCalls = 0;
  let totalErrors = 0;
  let limitOverruns = 0;
  let generation = 0;
  let windowStart = 0;

  const poll = async (): Promise<void> => {
    const now = elapsedS();
    await Promise.all(
      mesh.sidecars.map(async (s) => {
        const state = await sidecarState(s.admin);
        if (state.serial) serials.get(s.name)!.add(state.serial);
        const before = versions.get(s.name);
        versions.set(s.name, state.policyVersion);
        if (state.policyVersion !== undefined && before !== undefined && state.policyVersion !== before) {
          for (const push of pushes) if (push.appliedS[s.name] === undefined && now >= push.atS) push.appliedS[s.name] = now - push.atS;
        }
      }),
    );
    for (const child of [...mesh.sidecars.map((s) => s.child), ...mesh.controlPlane]) {
      if (child.hasExited() && !processProblems.some((p) => p.startsWith(child.name))) processProblems.push(`${child.name} exited: ${child.stderr().slice(-1000)}`);
    }
  };
  await poll();

  const closeWindow = (): void => {
    const records: CallRecord[] = load.take();
    const endS = elapsedS();
    const latencies = records
      .filter((r) => !r.error)
      .map((r) => r.ms)
      .sort((a, b) => a - b);
    const errors = records.filter((r) => r.error);
    for (const r of records) byClass.get(r.cls)!.set(r.outcome, (byClass.get(r.cls)!.get(r.outcome) ?? 0) + 1);
    for (const r of errors) errorKinds.set(`${r.cls} -> ${r.outcome}`, (errorKinds.get(`${r.cls} -> ${r.outcome}`) ?? 0) + 1);
    // Any stretch of T seconds admits at most rate * T + burst; a little slack for arrival vs issue time.
    const limitedAllowed = records.filter((r) => r.cls === 'h1 limited' && r.outcome === '200').length;
    const allowedMax = Math.ceil(LIMITED_PER_SECOND * (endS - windowStart) + LIMITED_PER_SECOND + 2);
    const overrun = Math.max(0, limitedAllowed - allowedMax);
    if (overrun > 0) errorKinds.set('h1 limited -> more 200s than the limit allows', (errorKinds.get('h1 limited -> more 200s than the limit allows') ?? 0) + overrun);
    limitOverruns += overrun;
    const rssKiB: Record<string, number> = {};
    const fds: Record<string, number> = {};
    for (const s of mesh.sidecars) {
      const footprint = processFootprint(s.pid);
      rssKiB[s.name] = footprint?.rssKiB ?? Number.NaN;
      fds[s.name] = footprint?.fds ?? Number.NaN;
    }
    const window: Window = { endS, calls: records.length, errors: errors.length + overrun, p50Ms: quantile(latencies, 0.5), p99Ms: quantile(latencies, 0.99), limitedAllowed, rssKiB, fds };
    windows.push(window);
    totalCalls += window.calls;
    totalErrors += window.errors;
    windowStart = endS;
    const rotations = [...serials.values()].reduce((n, set) => n + Math.max(0, set.size - 1), 0);
    const applied = pushes.filter((p) => Object.keys(p.appliedS).length === mesh.sidecars.length).length;
    log(
      `[${fmt(endS)}] calls ${window.calls} (total ${totalCalls}) errors ${window.errors} (total ${totalErrors}) | p50 ${window.p50Ms.toFixed(1)} ms p99 ${window.p99Ms.toFixed(1)} ms` +
        ` | RSS MiB ${mesh.sidecars.map((s) => `${s.name} ${(rssKiB[s.name]! / 1024).toFixed(1)}`).join(' ')}` +
        ` | fds ${mesh.sidecars.map((s) => `${s.name} ${fds[s.name]}`).join(' ')} | rotations ${rotations} pushes ${applied}/${pushes.length} | in flight ${load.inFlight()}`,
    );
  };

  const pollTimer = setInterval(() => void poll(), POLL_S * 1000);
  const reportTimer = setInterval(closeWindow, reportEvery * 1000);
  const pushTimer = setInterval(() => {
    generation++;
    const push: Push = { generation, atS: elapsedS(), appliedS: {} };
    pushes.push(push);
    mesh.pushPolicy(generation);
    // Polled closely until in force everywhere, so the time to apply is measured to a quarter second.
    void (async () => {
      while (Object.keys(push.appliedS).length < mesh.sidecars.length && elapsedS() < push.atS + PUSH_DEADLINE_S) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        await poll();
      }
    })();
  }, 60_000);
  // A fresh token now and then (they live an hour).
  const tokenTimer = setInterval(() => void mesh.token().then((t) => (token = t)), 10 * 60_000);

  await new Promise((resolve) => setTimeout(resolve, minutes * 60_000));
  clearInterval(reportTimer);
  clearInterval(pushTimer);
  clearInterval(tokenTimer);
  await load.stop(10_000);
  // The last push gets its deadline before it is judged.
  const lastPush = pushes.at(-1);
  if (lastPush) while (elapsedS() < lastPush.atS + PUSH_DEADLINE_S && Object.keys(lastPush.appliedS).length < mesh.sidecars.length) await poll().then(() => new Promise((r) => setTimeout(r, 1000)));
  clearInterval(pollTimer);
  await poll();
  closeWindow();

  const pushProblems = pushes
    .filter((p) => mesh.sidecars.some((s) => !(p.appliedS[s.name]! <= PUSH_DEADLINE_S)))
    .map((p) => `push ${p.generation} at ${fmt(p.atS)} not in force on every sidecar within ${PUSH_DEADLINE_S} s: ${JSON.stringify(p.appliedS)}`);
  const warm = windows.find((w) => w.endS >= WARM_UP_S) ?? windows[0]!;
  const last = windows.at(-1)!;
  const growth = Object.fromEntries(
    mesh.sidecars.map((s) => [
      s.name,
      { fromKiB: warm.rssKiB[s.name], toKiB: last.rssKiB[s.name], growthKiB: last.rssKiB[s.name]! - warm.rssKiB[s.name]!, fdsFrom: warm.fds[s.name], fdsTo: last.fds[s.name] },
    ]),
  );
  // Least-squares slope of RSS over the windows after warm-up: steadier than two samples between GCs.
  const after = windows.filter((w) => w.endS >= warm.endS);
  const slopeMiBPerHour = (name: string): number | null => {
    if (after.length < 6) return null; // under 3 minutes of windows the trend is GC noise
    const xs = after.map((w) => w.endS / 3600);
    const ys = after.map((w) => w.rssKiB[name]! / 1024);
    const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
    const my = ys.reduce((a, b) => a + b, 0) / ys.length;
    const num = xs.reduce((sum, x, i) => sum + (x - mx) * (ys[i]! - my), 0);
    const den = xs.reduce((sum, x) => sum + (x - mx) ** 2, 0);
    return den === 0 ? null : Number((num / den).toFixed(1));
  };
  for (const s of mesh.sidecars) Object.assign(growth[s.name]!, { slopeMiBPerHour: slopeMiBPerHour(s.name), maxKiB: Math.max(...after.map((w) => w.rssKiB[s.name]!)) });
  const summary = {
    startedAt: new Date(Date.now() - elapsedS() * 1000).toISOString(),
    minutes,
    rate,
    classes: CLASSES,
    calls: totalCalls,
    errors: totalErrors,
    errorKinds: Object.fromEntries(errorKinds),
    outcomesByClass: Object.fromEntries([...byClass].map(([name, outcomes]) => [name, Object.fromEntries(outcomes)])),
    limitOverruns,
    p99OverTime: windows.map((w) => ({ atS: Math.round(w.endS), p50Ms: Number(w.p50Ms.toFixed(2)), p99Ms: Number(w.p99Ms.toFixed(2)), calls: w.calls, errors: w.errors })),
    rssGrowthAfterWarmUp: { fromS: Math.round(warm.endS), toS: Math.round(last.endS), bySidecar: growth },
    rotations: Object.fromEntries([...serials].map(([name, set]) => [name, Math.max(0, set.size - 1)])),
    pushes: pushes.map((p) => ({ generation: p.generation, atS: Math.round(p.atS), appliedS: Object.fromEntries(Object.entries(p.appliedS).map(([k, v]) => [k, Number(v.toFixed(2))])) })),
    problems: [...processProblems, ...pushProblems],
    windows,
  };

  log('');
  log(`soak summary: ${totalCalls} calls in ${minutes} min at ${rate}/s, ${totalErrors} errors${errorKinds.size > 0 ? `: ${[...errorKinds].map(([k, n]) => `${k} x${n}`).join('; ')}` : ''}`);
  log(`  outcomes: ${[...byClass].map(([name, outcomes]) => `${name}: ${[...outcomes].map(([o, n]) => `${o} x${n}`).join(', ')}`).join(' | ')}`);
  log(`  p99 over time (ms): ${windows.map((w) => `${fmt(w.endS)} ${w.p99Ms.toFixed(1)}`).join(', ')}`);
  log(
    `  RSS growth after ${fmt(warm.endS)}: ${mesh.sidecars.map((s) => `${s.name} ${(growth[s.name]!.growthKiB / 1024).toFixed(1)} MiB (trend ${(growth[s.name] as { slopeMiBPerHour?: number | null }).slopeMiBPerHour ?? '-'} MiB/h)`).join(', ')}; fds ${mesh.sidecars.map((s) => `${s.name} ${growth[s.name]!.fdsFrom}->${growth[s.name]!.fdsTo}`).join(', ')}`,
  );
  const slowest = Math.max(0, ...pushes.flatMap((p) => Object.values(p.appliedS)));
  log(
    `  certificate rotations: ${Object.entries(summary.rotations)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}; policy pushes in force: ${pushes.length - pushProblems.length}/${pushes.length} (slowest ${slowest.toFixed(2)} s)`,
  );
  for (const problem of summary.problems) log(`  problem: ${problem}`);
  writeReport(outFile, summary, log);

  await clients.close();
  await mesh.close();
  return totalErrors === 0 && summary.problems.length === 0 ? 0 : 1;
}

runBench('soak', main);
