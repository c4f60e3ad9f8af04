import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CA_REASONS } from '../../../src/ca/ca-reasons.ts';

const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');

describe('CA refusal reasons are a documented contract', () => {
  it.each(Object.entries(CA_REASONS))('README documents %s with its gRPC status', (reason, { grpc }) => {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${reason}\` |`));
    expect(row, `README.md CA reason table has no row for \`${reason}\``).toBeDefined();
    expect(Number.parseInt(row!.split('|')[2]!.trim(), 10)).toBe(grpc);
  });
});
