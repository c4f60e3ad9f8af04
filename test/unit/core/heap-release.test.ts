import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

/*
 * releaseHeap runs at a sidecar's quiet moments (src/cli/run-role.ts): an idle
 * sidecar gives back the young generation its start-up or its load grew and the
 * pages V8 pooled. Run in a fresh process with the image's young-generation bound,
 * so the heap it reads is the one it grew itself, not the test runner's.
 */

const MODULE = new URL('../../../src/core/heap-release.ts', import.meta.url).href;

const SCRIPT = `
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { releaseHeap } from ${JSON.stringify(MODULE)};
const youngBytes = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
// Start-up's shape: allocation that survives scavenges (modules, config), then mostly dropped.
let kept = [];
for (let round = 0; round < 40; round++) {
  for (let i = 0; i < 20000; i++) kept.push({ id: i, list: [i], text: 'item' + i });
  if (kept.length > 200000) kept = kept.slice(100000);
}
kept = [];
const before = { young: youngBytes(), physical: getHeapStatistics().total_physical_size };
const blockedMs = releaseHeap();
const after = { young: youngBytes(), physical: getHeapStatistics().total_physical_size };
console.log(JSON.stringify({ before, after, blockedMs, globalGc: typeof globalThis.gc, contextGc: runInNewContext('typeof gc') }));
`;

const MiB = 1024 * 1024;

/**
 * The quiet watch with short windows, a stand-in release and a committed heap the script sets: each
 * release is printed with the time since start; `steps` says what the process does meanwhile.
 */
const WATCH_SCRIPT = `
import { releaseHeapWhenQuiet } from ${JSON.stringify(MODULE)};
const policy = { windowMs: 40, maxUtilization: 0.1, checkMs: 40, regrowthBytes: 16, minIntervalMs: Number(process.argv[2]), settleWindows: 5 };
const steps = JSON.parse(process.argv[1]);
let heap = 100;
// Inside the running loop, as a role's start is: work before the loop starts is not in its utilization.
await new Promise((done) => setImmediate(done));
const started = performance.now();
const releases = [];
const stop = releaseHeapWhenQuiet((release) => releases.push(release === undefined ? null : Math.round(performance.now() - started)), {
  policy,
  heapBytes: () => heap,
  release: () => { heap = 100; return 1; },
});
// The loop works 36 ms of every 40 while busy; the watch never holds a process open by itself.
const work = () => { const until = performance.now() + 36; while (performance.now() < until); };
const busyUntil = (ms) => new Promise((done) => { work(); const t = setInterval(() => { work(); if (performance.now() - started > ms) { clearInterval(t); done(); } }, 40); });
const idleUntil = (ms) => new Promise((done) => setTimeout(done, Math.max(0, ms - (performance.now() - started))));
for (const [what, untilMs, grow] of steps) {
  heap += grow ?? 0;
  await (what === 'busy' ? busyUntil(untilMs) : idleUntil(untilMs));
}
stop();
console.log(JSON.stringify(releases));
`;

type Step = ['busy' | 'idle', number, number?];

async function watchRun(steps: Step[], minIntervalMs = 0): Promise<Array<number | null>> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', WATCH_SCRIPT, JSON.stringify(steps), String(minIntervalMs)], { timeout: 30_000 });
  return JSON.parse(stdout);
}

describe('releaseStartupHeap', () => {
  it('shrinks the young generation start-up grew and returns the freed pages, leaving no gc function exposed', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--max-semi-space-size=4', '--input-type=module', '-e', SCRIPT], { timeout: 30_000 });
    const result = JSON.parse(stdout) as {
      before: { young: number; physical: number };
      after: { young: number; physical: number };
      blockedMs: number | undefined;
      globalGc: string;
      contextGc: string;
    };
    // The allocation grew the young generation to the bound (two 4 MiB semi-spaces)...
    expect(result.before.young).toBeGreaterThanOrEqual(8 * MiB);
    // ...and a plain major collection would leave it there; the release takes it back to its start size.
    expect(result.after.young).toBeLessThanOrEqual(2 * MiB);
    expect(result.before.physical - result.after.physical).toBeGreaterThan(6 * MiB);
    expect(result.blockedMs).toBeGreaterThan(0);
    // The flag that hands out the gc function is set back: neither this context nor a later one has one.
    expect(result.globalGc).toBe('undefined');
    expect(result.contextGc).toBe('undefined');
  });

  it('waits for a quiet event loop, however long it stays busy', async () => {
    expect(await watchRun([['idle', 200]])).toHaveLength(1);
    const afterBusy = await watchRun([
      ['busy', 600],
      ['idle', 800],
    ]);
    expect(afterBusy).toHaveLength(1);
    expect(afterBusy[0]).toBeGreaterThanOrEqual(600);
  });

  it('releases again once load has grown the heap back, not while it has not', async () => {
    // Released when quiet after start; load that grows the heap past the threshold brings the next release when quiet again.
    const regrown = await watchRun([
      ['idle', 200],
      ['busy', 600, 32],
      ['idle', 1100],
    ]);
    expect(regrown).toHaveLength(2);
    // After five quiet windows in a row.
    expect(regrown[1]).toBeGreaterThanOrEqual(600 + 4 * 40);
    // A heap that shrinks by itself while it settles (V8's memory reducer) costs no second pause.
    expect(
      await watchRun([
        ['idle', 200],
        ['busy', 600, 32],
        ['idle', 660],
        ['idle', 1100, -32],
      ]),
    ).toHaveLength(1);
    // Load that leaves the heap as it was costs no second pause.
    expect(
      await watchRun([
        ['idle', 200],
        ['busy', 600, 8],
        ['idle', 1100],
      ]),
    ).toHaveLength(1);
    // Nor does one within the least interval between releases.
    expect(
      await watchRun(
        [
          ['idle', 200],
          ['busy', 600, 32],
          ['idle', 1100],
        ],
        5000,
      ),
    ).toHaveLength(1);
  });
});
