import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { FUZZ_TARGETS, FUZZ_WORKERS } from '../test/fuzz/targets.ts';

/*
 * The long fuzz run: `npm run fuzz -- --minutes 30 [--seed N] [--target NAME ...]`.
 * Runs the targets of test/fuzz/ (the same ones `npm test` runs briefly) for
 * about --minutes in all, from one printed seed; a failing input is shrunk and
 * written to test/fuzz/regressions/<target>/<hash>.json, which every short run
 * then replays. Exit status: vitest's (non-zero when a target failed).
 */

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const REGRESSIONS = join(ROOT, 'test/fuzz/regressions');

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    seed: { type: 'string' },
    target: { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});

if (values.help) {
  process.stdout.write(`Usage: npm run fuzz -- [--minutes N] [--seed N] [--target NAME ...]

Fuzzes ${FUZZ_TARGETS.join(', ')}
for about N minutes in all (default 10), split evenly over the targets run. A failing
input is written to test/fuzz/regressions/<target>/, where npm test replays it.
`);
  process.exit(0);
}

const minutes = Number(values.minutes);
if (!Number.isFinite(minutes) || minutes <= 0) {
  process.stderr.write(`fuzz: --minutes: expected a positive number, got "${values.minutes}"\n`);
  process.exit(2);
}
const targets = values.target ?? [...FUZZ_TARGETS];
const unknown = targets.filter((t) => !(FUZZ_TARGETS as readonly string[]).includes(t));
if (unknown.length > 0) {
  process.stderr.write(`fuzz: --target: unknown ${unknown.join(', ')} (targets: ${FUZZ_TARGETS.join(', ')})\n`);
  process.exit(2);
}
const seed = values.seed === undefined ? randomInt(2 ** 31 - 1) : Number(values.seed);
if (!Number.isSafeInteger(seed)) {
  process.stderr.write(`fuzz: --seed: expected an integer, got "${values.seed}"\n`);
  process.exit(2);
}

// Targets run one after another within a file, files FUZZ_WORKERS at a time.
const targetMs = Math.max(10_000, Math.floor((minutes * 60_000 * Math.min(FUZZ_WORKERS, targets.length)) / targets.length));

const storedNow = (): Set<string> => {
  const files = new Set<string>();
  if (!existsSync(REGRESSIONS)) return files;
  for (const dir of readdirSync(REGRESSIONS)) for (const file of readdirSync(join(REGRESSIONS, dir))) files.add(`${dir}/${file}`);
  return files;
};
const before = storedNow();

process.stdout.write(
  `fuzz: seed ${seed}, ${targets.length} targets, ${Math.round(targetMs / 1000)} s each (about ${minutes} min in all)\n` +
    `      reproduce with: FUZZ_SEED=${seed} FUZZ_TARGET_MS=${targetMs} npx vitest run test/fuzz\n`,
);

const args = ['vitest', 'run', 'test/fuzz', '--testTimeout', String(targetMs + 600_000)];
if (values.target) args.push('-t', `^fuzz (${targets.join('|')}) `);
const child = spawn('npx', args, {
  cwd: ROOT,
  stdio: 'inherit',
  env: { ...process.env, FUZZ_TARGET_MS: String(targetMs), FUZZ_SEED: String(seed) },
});
const code: number = await new Promise((resolve) => child.once('exit', (c) => resolve(c ?? 1)));

const added = [...storedNow()].filter((f) => !before.has(f));
process.stdout.write(
  added.length === 0
    ? `fuzz: seed ${seed}: no new failing input\n`
    : `fuzz: seed ${seed}: ${added.length} new failing input(s), replayed by npm test from now on:\n${added.map((f) => `  test/fuzz/regressions/${f}\n`).join('')}`,
);
process.exit(code);
