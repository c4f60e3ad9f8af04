import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/*
 * Folders of src/ depend one way: each may import only from folders on lower
 * floors (and from itself). Core and errors at the bottom, the roles and the
 * CLI at the top. An import against the direction fails here with the file
 * and the import, so the layout cannot drift back into a circle.
 */

const FLOORS: ReadonlyArray<readonly string[]> = [
  ['core'],
  ['config', 'errors', 'sandbox'],
  ['policy', 'telemetry', 'admin'],
  ['proxy', 'identity'],
  ['filters', 'outbound', 'ca', 'policy-server', 'interception', 'inject'],
  ['inbound'],
  ['sidecar', 'policy-tools'],
  ['demo'],
  ['cli'],
];

const SRC = path.resolve(import.meta.dirname, '../../../src');
const floorOf = new Map(FLOORS.flatMap((folders, floor) => folders.map((f) => [f, floor] as const)));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}

/** Relative imports of a file: static `from '...'`, side-effect `import '...'` and dynamic `import('...')`. */
function relativeImports(text: string): string[] {
  const found: string[] = [];
  for (const match of text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^\s*import\s+)'(\.[^']+)'/gm)) found.push(match[1]!);
  return found;
}

const folderOf = (file: string): string => path.relative(SRC, file).split(path.sep)[0]!;

describe('source layout', () => {
  const files = sourceFiles(SRC);

  it('puts every folder of src/ on a floor', () => {
    const folders = new Set(files.map(folderOf).filter((f) => !f.endsWith('.ts')));
    expect([...folders].filter((f) => !floorOf.has(f))).toEqual([]);
  });

  it('has no circle of files importing each other, type imports included', () => {
    const edges = new Map(
      files.map((file) => [
        file,
        relativeImports(readFileSync(file, 'utf8'))
          .map((spec) => path.resolve(path.dirname(file), spec))
          .filter((target) => target.startsWith(SRC)),
      ]),
    );
    const circles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (file: string, trail: string[]): void => {
      state.set(file, 'open');
      for (const next of edges.get(file) ?? []) {
        if (state.get(next) === 'open') circles.push([...trail.slice(trail.indexOf(next)), next].map((f) => path.relative(SRC, f)).join(' -> '));
        else if (!state.has(next)) visit(next, [...trail, next]);
      }
      state.set(file, 'done');
    };
    for (const file of files) if (!state.has(file)) visit(file, [file]);
    expect(circles).toEqual([]);
  });

  it('has no import from a folder to one on its own or a higher floor', () => {
    const against: string[] = [];
    for (const file of files) {
      const from = folderOf(file);
      for (const spec of relativeImports(readFileSync(file, 'utf8'))) {
        const to = folderOf(path.resolve(path.dirname(file), spec));
        if (to === from) continue;
        if ((floorOf.get(to) ?? Infinity) >= (floorOf.get(from) ?? -1)) against.push(`${path.relative(SRC, file)} -> ${spec} (${from} floor ${floorOf.get(from)}, ${to} floor ${floorOf.get(to)})`);
      }
    }
    expect(against).toEqual([]);
  });
});
