import http2 from 'node:http2';
import { describe, expect, it } from 'vitest';
import * as codes from '../../../src/proxy/h2-error-codes.ts';

describe('HTTP/2 error codes held as numbers', () => {
  it('are the codes node:http2 sends for the same names', () => {
    for (const [name, value] of Object.entries(codes)) expect([name, value]).toEqual([name, http2.constants[name as keyof typeof http2.constants]]);
  });
});
