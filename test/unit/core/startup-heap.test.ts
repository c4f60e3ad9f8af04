import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

/*
 * releaseStartupHeap runs once after a sidecar starts (src/cli/run-role.ts): an
 * idle sidecar gives back the young generation its start-up grew and the pages
 * V8 pooled. Run in a fresh process with the image's young-generation bound,
 * so the heap it reads is the one it grew itself, not the test runner's.
 */

const MODULE = new URL('../../../src/core/startup-heap.ts', import.meta.url).href;

const SCRIPT = `
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { releaseStartupHeap } from ${JSON.stringify(MODULE)};
const youngBytes = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
// Start-up's shape: allocation that survives scavenges (modules, config), then mostly dropped.
let kept = [];
for (let round = 0; round < 40; round++) {
  for (let i = 0; i < 20000; i++) kept.push({ id: i, list: [i], text: 'item' + i });
  if (kept.length > 200000) kept = kept.slice(100000);
}
kept = [];
const before = { young: youngBytes(), physical: getHeapStatistics().total_physical_size };
const blockedMs = releaseStartupHeap();
const after = { young: youngBytes(), physical: getHeapStatistics().total_physical_size };
console.log(JSON.stringify({ before, after, blockedMs, globalGc: typeof globalThis.gc, contextGc: runInNewContext('typeof gc') }));
`;

const MiB = 1024 * 1024;

/** The quiet watch with short windows: released once the loop is quiet, or given up while it stays busy. */
const WATCH_SCRIPT = `
import { releaseStartupHeapWhenQuiet } from ${JSON.stringify(MODULE)};
const watch = { windowMs: 50, maxUtilization: 0.1, maxWindows: 6 };
const busy = process.argv[1] === 'busy';
// Busy: the loop works 45 ms of every 50.
const load = busy ? setInterval(() => { const until = performance.now() + 45; while (performance.now() < until); }, 50) : undefined;
// The watch never holds a process open by itself: this one stands in for the role's listeners.
const alive = setTimeout(() => {}, 10_000);
const started = performance.now();
releaseStartupHeapWhenQuiet((blockedMs) => {
  clearInterval(load);
  clearTimeout(alive);
  console.log(JSON.stringify({ blockedMs: blockedMs ?? null, afterMs: performance.now() - started }));
}, watch);
`;

async function watchRun(mode: 'quiet' | 'busy'): Promise<{ blockedMs: number | null; afterMs: number }> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', WATCH_SCRIPT, mode], { timeout: 30_000 });
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

  it('waits for a quiet event loop, and gives up on one that stays busy', async () => {
    const quiet = await watchRun('quiet');
    expect(quiet.blockedMs).toBeGreaterThan(0);
    expect(quiet.afterMs).toBeLessThan(6 * 50);
    const busy = await watchRun('busy');
    expect(busy.blockedMs).toBeNull();
    expect(busy.afterMs).toBeGreaterThanOrEqual(6 * 50);
  });
});
