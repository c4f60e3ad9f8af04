import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { normalizePath } from '../../src/core/path-normalize.ts';
import { PATH_PIECES } from '../helpers/path-pieces.ts';

/*
 * Properties of path normalization (src/core/path-normalize.ts), over paths
 * built from the pieces encoding tricks are made of.
 */

const PIECES = [...PATH_PIECES, '%61', '%7E', '%3B', '%3a', '%c3%a9', '%zz', '~', '-', '_', 'B', '!'];
const piecePath = fc.array(fc.constantFrom(...PIECES), { maxLength: 16 }).map((parts) => `/${parts.join('')}`);
const anyPath = fc.oneof(
  piecePath,
  fc.string({ maxLength: 40 }).map((s) => `/${s}`),
);

/**
 * What an app that percent-decodes once sees as the segments of a forwarded
 * path, with `;` parameters cut before decoding (as Tomcat does) or kept.
 */
function decodedSegments(path: string): string[] {
  const decode = (text: string) => text.replace(/%([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
  return path.split('/').flatMap((segment) => [decode(segment), decode(segment.split(';')[0]!)]);
}

describe('path normalization (property)', () => {
  it('is idempotent: a normalized path normalizes to itself', () => {
    fc.assert(
      fc.property(anyPath, fc.constantFrom('refuse' as const, 'keep' as const), (raw, encodedSeparators) => {
        const once = normalizePath(raw, { encodedSeparators });
        if (!once.ok) return;
        expect(normalizePath(once.path, { encodedSeparators })).toEqual(once);
      }),
      { numRuns: 3000 },
    );
  });

  it('leaves no dot segment, empty segment or separator for an app that decodes once', () => {
    fc.assert(
      fc.property(anyPath, (raw) => {
        const result = normalizePath(raw);
        if (!result.ok) return;
        expect(result.path.startsWith('/')).toBe(true);
        const inner = result.path.slice(1, result.path.endsWith('/') ? -1 : undefined);
        if (inner === '') return;
        expect(inner.split('/')).not.toContain('');
        for (const segment of decodedSegments(inner)) {
          expect(segment).not.toMatch(/^\.\.?$/);
          expect(segment).not.toMatch(/[/\\\u0000]/);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('keeps only upper-case escapes, none of an unreserved character', () => {
    fc.assert(
      fc.property(anyPath, (raw) => {
        const result = normalizePath(raw);
        if (!result.ok) return;
        for (const [, hex] of result.path.matchAll(/%(..)/g)) {
          expect(hex).toMatch(/^[0-9A-F]{2}$/);
          expect(String.fromCharCode(Number.parseInt(hex!, 16))).not.toMatch(/[A-Za-z0-9\-._~]/);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
