/*
 * `npm run docs:config`: regenerates the README's configuration reference
 * (between the config-reference markers) from src/config/sidecar-schema.ts.
 * `--check` writes nothing and exits 1 when the README is stale.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { renderConfigReference, replaceConfigReference } from '../src/config/reference.ts';
import { sidecarConfigSchema } from '../src/config/sidecar-schema.ts';

const { values } = parseArgs({ options: { check: { type: 'boolean', default: false } }, strict: true });
const readmePath = path.join(import.meta.dirname, '..', 'README.md');
const readme = await readFile(readmePath, 'utf8');
const updated = replaceConfigReference(readme, renderConfigReference(sidecarConfigSchema));

if (updated === readme) {
  process.stdout.write('README.md configuration reference is up to date\n');
} else if (values.check) {
  process.stderr.write('README.md configuration reference is stale: run `npm run docs:config`\n');
  process.exitCode = 1;
} else {
  await writeFile(readmePath, updated);
  process.stdout.write('README.md configuration reference regenerated\n');
}
