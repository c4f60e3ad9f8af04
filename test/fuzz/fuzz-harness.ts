import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, it } from 'vitest';
import type { FuzzTargetName } from './targets.ts';
import { FUZZ_TARGETS } from './targets.ts';

/*
 * One fuzz target = an arbitrary, a check that throws when a property does not
 * hold, and a folder of stored failing inputs. In `npm test` (the short run)
 * the stored inputs are replayed first, then a fixed-seed run bounded by
 * `shortRuns` and `shortMs`. `npm run fuzz` (scripts/fuzz.ts) sets
 * FUZZ_TARGET_MS: the same targets run for that long each, from a printed
 * seed, and the (shrunk) input of a failure is written to
 * test/fuzz/regressions/<target>/<hash>.json|bin, where every later short run
 * replays it.
 *
 * Environment: FUZZ_TARGET_MS (long run, per target), FUZZ_SEED, FUZZ_RUNS.
 */

const REGRESSIONS = fileURLToPath(new URL('./regressions/', import.meta.url));

/** How an input is kept on disk: raw bytes or JSON. */
interface InputCodec<T> {
  readonly ext: 'json' | 'bin';
  encode(input: T): Buffer;
  decode(data: Buffer): T;
}

const jsonCodec = <T>(): InputCodec<T> => ({
  ext: 'json',
  encode: (input) => Buffer.from(`${JSON.stringify(input, null, 1)}\n`),
  decode: (data) => JSON.parse(data.toString('utf8')) as T,
});

export interface FuzzTarget<T> {
  readonly name: FuzzTargetName;
  /** What the target is fed: one test case. */
  readonly arbitrary: fc.Arbitrary<T>;
  /** Throws (an expect failure) when a property does not hold for `input`. */
  readonly check: (input: T) => void | Promise<void>;
  /** Runs of the short run in `npm test`. */
  readonly shortRuns: number;
  /** Time cap of the short run, ms (it stops early, never fails, when the machine is slow). */
  readonly shortMs: number;
  readonly codec?: InputCodec<T>;
  /**
   * Stored inputs that still fail, by file name, with why they are not fixed
   * here: replayed as `it.fails`, so they turn red once fixed (then remove the entry).
   */
  readonly knownFailures?: Readonly<Record<string, string>>;
}

interface FuzzSettings {
  readonly long: boolean;
  readonly seed: number;
  readonly numRuns: number;
  readonly timeMs: number;
}

/** A seed of its own per target for the short run: fixed, so `npm test` is deterministic. */
function seedOf(name: string): number {
  return createHash('sha256').update(name).digest().readInt32LE(0);
}

function envNumber(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === '') return undefined;
  const value = Number(text);
  if (!Number.isFinite(value)) throw new Error(`${name}: expected a number, got ${JSON.stringify(text)}`);
  return value;
}

function fuzzSettings(name: string, shortRuns: number, shortMs: number): FuzzSettings {
  const targetMs = envNumber('FUZZ_TARGET_MS');
  const long = targetMs !== undefined;
  return {
    long,
    seed: envNumber('FUZZ_SEED') ?? seedOf(name),
    numRuns: envNumber('FUZZ_RUNS') ?? (long ? 2 ** 31 - 1 : shortRuns),
    timeMs: targetMs ?? shortMs,
  };
}

/** Stored inputs of a target: file name and bytes, in name order. */
function storedInputs(name: string): Array<{ file: string; data: Buffer }> {
  const dir = join(REGRESSIONS, name);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((file) => /\.(json|bin)$/.test(file))
    .sort()
    .map((file) => ({ file, data: readFileSync(join(dir, file)) }));
}

/** Writes a failing input where the short run replays it; returns its path. */
function storeInput(name: string, data: Buffer, ext: string): string {
  const dir = join(REGRESSIONS, name);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${createHash('sha256').update(data).digest('hex').slice(0, 16)}.${ext}`);
  writeFileSync(file, data);
  return file;
}

/**
 * Registers the target's tests: one per stored input, then the random run.
 * Call at the top level of a *.fuzz.test.ts file; `setup` (beforeAll hooks)
 * may be registered inside the describe by the caller before this runs.
 */
export function fuzzTarget<T>(target: FuzzTarget<T>, setup?: () => void): void {
  if (!(FUZZ_TARGETS as readonly string[]).includes(target.name)) throw new Error(`fuzz target ${target.name} is not listed in test/fuzz/targets.ts`);
  const codec = target.codec ?? jsonCodec<T>();
  const settings = fuzzSettings(target.name, target.shortRuns, target.shortMs);
  // Room for the last run, the shrinking of a failure and the teardown.
  const testTimeout = settings.timeMs + (settings.long ? 300_000 : 30_000);

  describe(`fuzz ${target.name}`, () => {
    setup?.();
    for (const { file, data } of storedInputs(target.name)) {
      const note = target.knownFailures?.[file];
      const replay = async (): Promise<void> => {
        await target.check(codec.decode(data));
      };
      if (note) it.fails(`stored input ${file} still fails (known: ${note})`, replay, 30_000);
      else it(`stored input ${file} holds`, replay, 30_000);
    }

    it(
      `random inputs (${settings.long ? `long run, ${Math.round(settings.timeMs / 1000)} s` : `${settings.numRuns} runs`}, seed ${settings.seed})`,
      async () => {
        const started = performance.now();
        const property = fc.asyncProperty(target.arbitrary, async (input) => {
          await target.check(input);
        });
        const details = await fc.check(property, {
          seed: settings.seed,
          numRuns: settings.numRuns,
          plugins: [fc.interruptAfterTimeLimit(settings.timeMs)],
          // Long runs shrink for a bounded time: a failure found late still reports an input.
          ...(settings.long ? { endOnFailure: false } : {}),
        });
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        if (settings.long || details.failed) {
          console.log(`fuzz ${target.name}: seed ${settings.seed}, ${details.numRuns} runs in ${seconds} s${details.failed ? ', FAILED' : ''}`);
        }
        if (!details.failed) return;
        let stored = '';
        if (settings.long && details.counterexample) {
          stored = `\nstored as ${storeInput(target.name, codec.encode((details.counterexample as [T])[0]), codec.ext)} (the short run replays it from now on)`;
        }
        const cause = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
        // A counterexample can be megabytes: the report keeps its start (the stored file has all of it).
        const report = (await fc.asyncDefaultReportMessage(details)) ?? 'property failed';
        throw new Error(`${report.length > 4000 ? `${report.slice(0, 4000)}... (${report.length} characters)` : report}\n${cause.slice(0, 2000)}${stored}`);
      },
      testTimeout,
    );
  });
}

/**
 * The most one input of `chars` characters may take: linear work with a wide
 * margin (50 us a character, 2 s to start), since test machines are shared and
 * busy. What it catches is super-linear work and hangs, not a slow constant.
 */
export function timeBudgetMs(chars: number): number {
  return 2000 + chars * 0.05;
}

/** Milliseconds `fn` took; for "never hangs" bounds on one input. */
export function timed<R>(fn: () => R): { value: R; ms: number } {
  const started = performance.now();
  const value = fn();
  return { value, ms: performance.now() - started };
}
