import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFilters } from '../../../src/core/filter.ts';
import { createAuthnRuntime } from '../../../src/filters/authn/authn-runtime.ts';
import { buildInboundChain, createInboundRuntimes } from '../../../src/inbound/inbound-chain.ts';
import { selectDocuments } from '../../../src/policy/selector.ts';
import type { PolicyDocument } from '../../../src/policy/types.ts';
import type { ExplainCall } from '../../../src/policy-tools/explain.ts';
import { callContextOf, explainCall } from '../../../src/policy-tools/explain.ts';
import { BILLING, FRONTEND, IDP, load, ORDERS, writePolicySets } from './explain-fixtures.ts';

/*
 * `policy explain` must answer what the sidecar would: for any call, its
 * verdict (allow, or the refusal's code) equals that of the inbound chain the
 * sidecar builds for the same documents, run on the same call.
 */

let dir: string;
let sets: Array<readonly PolicyDocument[]>;
let tokens: string[];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meshgate-explain-chain-'));
  const pair = await generateKeyPair('ES256', { extractable: true });
  const written = await writePolicySets(dir, { ...(await exportJWK(pair.publicKey)), kid: 'e1', alg: 'ES256', use: 'sig' });
  sets = [await load(written.old), await load(written.new)];
  const sign = (claims: Record<string, unknown>, expiresIn: string) =>
    new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'e1' }).setIssuer(IDP).setAudience('orders').setSubject('alice').setIssuedAt().setExpirationTime(expiresIn).sign(pair.privateKey);
  tokens = [await sign({}, '1h'), await sign({}, '-1h'), 'not.a.token'];
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const calls = fc.record({
  set: fc.constantFrom(0, 1),
  from: fc.constantFrom(FRONTEND, BILLING, undefined),
  method: fc.constantFrom('GET', 'POST', 'DELETE'),
  path: fc.constantFrom('/orders/1', '/orders/1?x=1', '/admin', '/admin/users', '/reports/q1', '/x/../admin', '/ORDERS/1', '/'),
  address: fc.constantFrom('10.0.0.7', '203.0.113.9', '2001:db8::1'),
  token: fc.constantFrom(-1, 0, 1, 2),
});

describe('policy explain and the sidecar chain', () => {
  it('reach the same verdict for every call', async () => {
    await fc.assert(
      fc.asyncProperty(calls, async (c) => {
        const documents = sets[c.set]!;
        const call: ExplainCall = { from: c.from, to: ORDERS, method: c.method, path: c.path, address: c.address, ...(c.token >= 0 ? { jwt: tokens[c.token]! } : {}) };
        const explained = await explainCall(documents, call, { authnRuntime: createAuthnRuntime({ random: () => 0.5, clock: { now: Date.now, monotonic: () => performance.now() } }) });
        const q = c.path.indexOf('?');
        const chain = buildInboundChain(selectDocuments(documents, ORDERS), {
          onNoPolicy: 'deny',
          runtimes: createInboundRuntimes({ clock: { now: Date.now, monotonic: () => performance.now() }, random: () => 0.5, allowWhenNoAuthzPolicy: false }),
        });
        const ctx = callContextOf(call, explained.path || c.path, q < 0 ? '' : c.path.slice(q + 1));
        const verdict = await runFilters(chain, ctx);
        expect({ allow: explained.allow, code: explained.code }).toEqual(verdict.kind === 'continue' ? { allow: true, code: undefined } : { allow: false, code: verdict.code });
      }),
      { numRuns: 200, seed: 20261205 },
    );
  });
});
