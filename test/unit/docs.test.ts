import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { caConfigSchema } from '../../src/config/ca-schema.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { configReferenceSection, readConfigReference, renderConfigReference } from '../../src/config/reference.ts';
import { sidecarConfigSchema } from '../../src/config/sidecar-schema.ts';
import { codesOf, REASON_CODES } from '../../src/core/reason-codes.ts';
import { createSidecarMetrics } from '../../src/telemetry/metrics.ts';

/*
 * The README is part of the contract (STYLE.md #3): users alert on reason
 * codes and scrape metrics by the names documented there. These tests keep
 * it in step with the code.
 */

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

/** Cells of every markdown table row whose first cell is `name` in backticks, keyed by name. */
function tableRows(markdown: string): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const line of markdown.split('\n')) {
    const match = /^\|\s*`([^`]+)`\s*\|(.*)\|\s*$/.exec(line);
    if (!match) continue;
    const cells = match[2]!.split(/(?<!\\)\|/).map((cell) => cell.trim());
    if (!rows.has(match[1]!)) rows.set(match[1]!, cells);
  }
  return rows;
}

const rows = tableRows(readme);

describe('README', () => {
  it('has the configuration reference that the schema generates', () => {
    const section = readConfigReference(readme);
    expect(section, 'README.md lost its <!-- config-reference:start/end --> markers').toBeDefined();
    expect(section, 'README.md configuration reference is stale: run `npm run docs:config`').toBe(configReferenceSection(renderConfigReference(sidecarConfigSchema)));
  });

  it('has the CA configuration reference that the CA schema generates', () => {
    const start = '<!-- ca-config-reference:start -->';
    const end = '<!-- ca-config-reference:end -->';
    const from = readme.indexOf(start);
    const to = readme.indexOf(end);
    expect(from >= 0 && to > from, `README.md lost its ${start} ... ${end} markers`).toBe(true);
    expect(readme.slice(from + start.length, to), 'README.md CA configuration reference is stale: run `node_modules/.bin/node scripts/ca-config-reference.ts`').toBe(
      configReferenceSection(renderConfigReference(caConfigSchema)),
    );
  });

  // One table (src/core/reason-codes.ts): data-plane codes in the README's reason-code table (HTTP, gRPC),
  // the CA's in its refusal table (gRPC), the admin APIs' in the admin API code table (HTTP).
  it.each(Object.entries(REASON_CODES))('documents reason code %s with its statuses', (code, mapping) => {
    const cells = rows.get(code);
    expect(cells, `README.md has no reason-code table row for \`${code}\``).toBeDefined();
    // Its status columns in order: HTTP, then gRPC, each where the code has one.
    const expected = [...('http' in mapping ? [mapping.http] : []), ...('grpc' in mapping ? [mapping.grpc] : [])];
    expect(
      cells!.slice(0, expected.length).map((cell) => Number.parseInt(cell, 10)),
      `README.md: statuses of ${code}`,
    ).toEqual(expected);
  });

  it('lists the admin API codes in the admin API section', () => {
    const start = readme.indexOf('## Policy server admin API');
    expect(start, 'README.md lost its "Policy server admin API" section').toBeGreaterThanOrEqual(0);
    const section = tableRows(readme.slice(start, readme.indexOf('\n## ', start + 1)));
    expect(codesOf('admin').filter((code) => !section.has(code))).toEqual([]);
  });

  it('documents every metric the sidecar registers', () => {
    const names = createSidecarMetrics({ defaultMetrics: false })
      .registry.getMetricsAsArray()
      .map((metric) => metric.name);
    expect(names.length).toBeGreaterThan(0);
    const missing = names.filter((name) => !rows.has(name));
    expect(missing, 'metrics missing from the README metrics table').toEqual([]);
  });

  it('points at an example config that the schema accepts', async () => {
    expect(readme).toContain('deploy/examples/sidecar.yaml');
    const file = new URL('../../deploy/examples/sidecar.yaml', import.meta.url).pathname;
    const config = await loadConfigFile(file, sidecarConfigSchema);
    expect(config.services.map((s) => s.name)).toContain('orders');
  });
});
