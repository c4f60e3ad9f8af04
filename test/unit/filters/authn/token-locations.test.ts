import { describe, expect, it } from 'vitest';
import type { UpstreamRequestEdits } from '../../../../src/core/call-context.ts';
import type { TokenLocation } from '../../../../src/filters/authn/token-locations.ts';
import { createTokenLocations } from '../../../../src/filters/authn/token-locations.ts';
import { makeCall } from './authn-fixtures.ts';

const BEARER: TokenLocation = { kind: 'header', name: 'authorization', prefix: 'Bearer ' };
const RAW: TokenLocation = { kind: 'header', name: 'x-token', prefix: undefined };
const COOKIE: TokenLocation = { kind: 'cookie', name: 'session' };
const PARAM: TokenLocation = { kind: 'param', name: 'access_token' };

describe('token locations', () => {
  // [case, locations, headers, query, tokens found, edits after strip]
  const cases: Array<[string, TokenLocation[], Record<string, string>, string, string[], Partial<UpstreamRequestEdits>]> = [
    ['bearer header', [BEARER], { authorization: 'Bearer t1' }, '', ['t1'], { removeHeaders: ['authorization'] }],
    ['bearer scheme in another case, extra spaces', [BEARER], { authorization: 'BEARER   t1 ' }, '', ['t1'], { removeHeaders: ['authorization'] }],
    ['another scheme is no token', [BEARER], { authorization: 'Basic Zm9vOmJhcg==' }, '', [], { removeHeaders: [] }],
    ['a bare prefix is an empty token', [BEARER], { authorization: 'Bearer ' }, '', [''], { removeHeaders: ['authorization'] }],
    ['header without prefix', [RAW], { 'x-token': 't1' }, '', ['t1'], { removeHeaders: ['x-token'] }],
    ['cookie among others', [COOKIE], { cookie: 'a=1; session=t1; b=2' }, '', ['t1'], { removeHeaders: ['cookie'], setHeaders: { cookie: 'a=1; b=2' } }],
    ['quoted cookie', [COOKIE], { cookie: 'session="t1"' }, '', ['t1'], { removeHeaders: ['cookie'] }],
    ['the only cookie: the header goes', [COOKIE], { cookie: 'session=t1' }, '', ['t1'], { removeHeaders: ['cookie'], setHeaders: {} }],
    ['a cookie whose name only starts alike', [COOKIE], { cookie: 'session_id=x' }, '', [], {}],
    ['query parameter', [PARAM], {}, 'a=1&access_token=t1&b=2', ['t1'], { query: 'a=1&b=2' }],
    ['percent-encoded parameter name and value', [PARAM], {}, 'access%5Ftoken=t%2E1', ['t.1'], { query: '' }],
    ['a parameter twice', [PARAM], {}, 'access_token=t1&access_token=t2', ['t1', 't2'], { query: '' }],
    ['a malformed escape elsewhere does not throw', [PARAM], {}, 'x=%E0%A4%A&access_token=t1', ['t1'], { query: 'x=%E0%A4%A' }],
    [
      'several locations, in order',
      [BEARER, COOKIE, PARAM],
      { authorization: 'Bearer t1', cookie: 'session=t1' },
      'access_token=t1',
      ['t1', 't1', 't1'],
      { removeHeaders: ['authorization', 'cookie'], query: '' },
    ],
  ];
  for (const [name, locations, headers, query, tokens, edits] of cases) {
    it(name, () => {
      const l = createTokenLocations(locations);
      const call = makeCall({ headers, query });
      const found = l.find(call);
      expect(found.map((f) => f.token)).toEqual(tokens);
      const out: UpstreamRequestEdits = { removeHeaders: [], setHeaders: {} };
      l.strip(call, found, out);
      expect(out).toMatchObject(edits);
    });
  }
});
