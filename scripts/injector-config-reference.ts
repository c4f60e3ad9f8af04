/*
 * Regenerates the README's injector configuration reference (between the
 * injector-config-reference markers) from src/config/injector-schema.ts.
 * `--check` writes nothing and exits 1 when the README is stale.
 * Run: node_modules/.bin/node scripts/injector-config-reference.ts [--check]
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { injectorConfigSchema } from '../src/config/injector-schema.ts';
import { configReferenceSection, renderConfigReference } from '../src/config/reference.ts';

export const START = '<!-- injector-config-reference:start -->';
export const END = '<!-- injector-config-reference:end -->';

/** The text between the markers, or undefined when either is missing. */
export function readInjectorConfigReference(readme: string): string | undefined {
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  if (start < 0 || end < start) return undefined;
  return readme.slice(start + START.length, end);
}

export function expectedInjectorConfigReference(): string {
  return configReferenceSection(renderConfigReference(injectorConfigSchema));
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { check: { type: 'boolean', default: false } }, strict: true });
  const readmePath = path.join(import.meta.dirname, '..', 'README.md');
  const readme = await readFile(readmePath, 'utf8');
  if (readInjectorConfigReference(readme) === undefined) throw new Error(`README has no ${START} ... ${END} section`);
  const start = readme.indexOf(START) + START.length;
  const updated = readme.slice(0, start) + expectedInjectorConfigReference() + readme.slice(readme.indexOf(END));
  if (updated === readme) {
    process.stdout.write('README.md injector configuration reference is up to date\n');
  } else if (values.check) {
    process.stderr.write('README.md injector configuration reference is stale: run `node scripts/injector-config-reference.ts`\n');
    process.exitCode = 1;
  } else {
    await writeFile(readmePath, updated);
    process.stdout.write('README.md injector configuration reference regenerated\n');
  }
}
