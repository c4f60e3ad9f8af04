/*
 * Regenerates the README's CA configuration reference (between the
 * ca-config-reference markers) from src/config/ca-schema.ts.
 * `--check` writes nothing and exits 1 when the README is stale.
 * Run: node_modules/.bin/node scripts/ca-config-reference.ts [--check]
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { caConfigSchema } from '../src/config/ca-schema.ts';
import { configReferenceSection, renderConfigReference } from '../src/config/reference.ts';

export const CA_CONFIG_REFERENCE_START = '<!-- ca-config-reference:start -->';
export const CA_CONFIG_REFERENCE_END = '<!-- ca-config-reference:end -->';

/** The text between the CA markers, or undefined when either is missing. */
export function readCaConfigReference(readme: string): string | undefined {
  const start = readme.indexOf(CA_CONFIG_REFERENCE_START);
  const end = readme.indexOf(CA_CONFIG_REFERENCE_END);
  if (start < 0 || end < start) return undefined;
  return readme.slice(start + CA_CONFIG_REFERENCE_START.length, end);
}

export function expectedCaConfigReference(): string {
  return configReferenceSection(renderConfigReference(caConfigSchema));
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { check: { type: 'boolean', default: false } }, strict: true });
  const readmePath = path.join(import.meta.dirname, '..', 'README.md');
  const readme = await readFile(readmePath, 'utf8');
  const current = readCaConfigReference(readme);
  if (current === undefined) throw new Error(`README has no ${CA_CONFIG_REFERENCE_START} ... ${CA_CONFIG_REFERENCE_END} section`);
  const start = readme.indexOf(CA_CONFIG_REFERENCE_START) + CA_CONFIG_REFERENCE_START.length;
  const updated = readme.slice(0, start) + expectedCaConfigReference() + readme.slice(readme.indexOf(CA_CONFIG_REFERENCE_END));
  if (updated === readme) {
    process.stdout.write('README.md CA configuration reference is up to date\n');
  } else if (values.check) {
    process.stderr.write('README.md CA configuration reference is stale: run `node scripts/ca-config-reference.ts`\n');
    process.exitCode = 1;
  } else {
    await writeFile(readmePath, updated);
    process.stdout.write('README.md CA configuration reference regenerated\n');
  }
}
