import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/*
 * src/inject sits beside the roles (ARCHITECTURE.md, "Dependencies point one
 * way"): it may use config, core, errors and telemetry, never a role, the data
 * path or the CLI; and config must not reach up into it.
 */

const SRC = path.join(import.meta.dirname, '../../../src');

function imports(folder: string): Array<{ file: string; target: string }> {
  return readdirSync(path.join(SRC, folder))
    .filter((f) => f.endsWith('.ts'))
    .flatMap((file) =>
      [...readFileSync(path.join(SRC, folder, file), 'utf8').matchAll(/^import .* from '(\.\.?\/[^']+)';$/gm)].map((m) => ({
        file: `${folder}/${file}`,
        target: path.relative(SRC, path.resolve(SRC, folder, m[1]!)).split(path.sep)[0]!,
      })),
    );
}

describe('src/inject layering', () => {
  it('imports only config, core, errors and telemetry besides itself', () => {
    const found = imports('inject');
    expect(found.length).toBeGreaterThan(5);
    for (const { file, target } of found)
      expect(
        ['inject', 'config', 'core', 'errors', 'telemetry'].some((t) => target.startsWith(t)),
        `${file} imports ${target}`,
      ).toBe(true);
  });

  it('is imported by no lower folder', () => {
    for (const folder of ['config', 'core', 'errors', 'telemetry', 'identity', 'policy', 'proxy', 'inbound', 'outbound', 'sidecar', 'ca', 'policy-server']) {
      for (const { file, target } of imports(folder)) expect(target, `${file} imports src/inject`).not.toBe('inject');
    }
  });
});
