import { describe, expect, it } from 'vitest';
import { compileCallMatch, matchPathOf } from '../../../src/policy/call-match.ts';

describe('compileCallMatch', () => {
  it('holds for every call when the match is absent or empty', () => {
    expect(compileCallMatch(undefined)('DELETE', '/x')).toBe(true);
    expect(compileCallMatch({ paths: [], methods: [] })('GET', '/')).toBe(true);
  });

  it.each([
    ['/orders', '/orders', true],
    ['/orders', '/orders/1', false],
    ['/orders/*', '/orders/1/items', true],
    ['/orders/*/items', '/orders/7/items', true],
    ['/orders/*/items', '/orders/7/8/items', false],
    ['/caf%c3%a9', matchPathOf('/caf%C3%A9'), true],
    ['/admin', matchPathOf('/admin;jsessionid=1'), true],
  ])('path pattern %s against %s -> %s', (pattern, path, expected) => {
    expect(compileCallMatch({ paths: [pattern] })('GET', path)).toBe(expected);
  });

  it('needs one method and one path to hold', () => {
    const match = compileCallMatch({ paths: ['/a', '/b/*'], methods: ['post', 'PUT'] });
    expect(match('POST', '/b/c')).toBe(true);
    expect(match('PUT', '/a')).toBe(true);
    expect(match('GET', '/a')).toBe(false);
    expect(match('POST', '/c')).toBe(false);
  });
});
