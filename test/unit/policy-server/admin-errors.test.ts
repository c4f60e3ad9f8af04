import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ADMIN_ERROR_CODES } from '../../../src/policy-server/admin-errors.ts';

/* Admin API error codes are part of the contract (STYLE.md #3): each is documented with its status. */

const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
const start = readme.indexOf('## Policy server admin API');
const section = readme.slice(start, readme.indexOf('\n## ', start + 1));

describe('admin API error codes', () => {
  it('have a README section', () => {
    expect(start, 'README.md lost its "Policy server admin API" section').toBeGreaterThanOrEqual(0);
  });

  it.each(Object.entries(ADMIN_ERROR_CODES))('documents %s with its HTTP status', (code, { http }) => {
    const row = section.split('\n').find((line) => line.startsWith(`| \`${code}\` |`));
    expect(row, `README.md admin API code table has no row for \`${code}\``).toBeDefined();
    expect(Number.parseInt(row!.split('|')[2]!.trim(), 10)).toBe(http);
  });
});
