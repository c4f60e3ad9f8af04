import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { statusCodeOf } from '../../src/proxy/h1-response-parser.ts';

/*
 * The upstream response parser reads the status line by character code
 * (src/proxy/h1-response-parser.ts); the grammar it implements, RFC 9112 §4
 * as meshgate accepts it, is this expression. Every line it accepts, it must
 * accept with the same code, and every line it refuses, refuse.
 */
const GRAMMAR = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([\t\x20-\x7e\x80-\xff]*))?$/;

const oracle = (line: string): number => {
  const match = GRAMMAR.exec(line);
  return match ? Number(match[2]) : -1;
};

// Lines near the grammar: a valid line with a few characters replaced, dropped or added, from the
// alphabet that decides (digits, spaces, tabs, controls, DEL, obs-text, the letters of the version).
const near = fc
  .tuple(
    fc.constantFrom('HTTP/1.1', 'HTTP/1.0', 'HTTP/1.2', 'HTTP/2.0', 'http/1.1', 'HTTP/1.', 'HTTP/11'),
    fc.constantFrom(' ', '  ', '\t', ''),
    fc.string({ unit: fc.constantFrom('0', '1', '2', '5', '9', 'a', ' '), minLength: 0, maxLength: 4 }),
    fc.constantFrom('', ' ', '  ', '\t'),
    fc.string({ unit: fc.constantFrom('O', 'K', ' ', '\t', '\u0000', '\u001f', '\u007f', '\u0080', '\u00ff', '\u0100', '\r', '\n', ':'), maxLength: 6 }),
  )
  .map((parts) => parts.join(''));

describe('the upstream status line', () => {
  it('is read as the grammar reads it, for lines near it and for any line', () => {
    fc.assert(
      fc.property(fc.oneof(near, fc.string({ maxLength: 24 })), (line) => {
        expect(statusCodeOf(line, line.length)).toBe(oracle(line));
      }),
      { numRuns: 20_000 },
    );
  });
});
