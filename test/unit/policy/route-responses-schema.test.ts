import { describe, expect, it } from 'vitest';
import { documentApplies, selectorApplies } from '../../../src/policy/selector.ts';
import { compileSnapshot } from '../../../src/policy/snapshot.ts';
import { createPolicyValidator } from '../../../src/policy/validate.ts';
import { doc, errorLines, validDocument } from './helpers.ts';

/*
 * A Route's `responses` (issue 15, response side): validated like every other
 * field (file, document, field, reason), applied by the destination's own
 * sidecar, so delivered to it even when the Route's selector names only callers.
 */

const KEY = 'p.yaml: document 0 (Route/shop/p1)';
const route = (responses: string, service = 'orders', meta?: string) => doc('Route', `service: ${service}\nresponses: ${responses}`, meta);

describe('Route responses: validation', () => {
  it.each([
    ['neither cache nor hardening', '[{ name: a }]', 'spec.responses[0]: expected cache, hardening or both'],
    ['a size that is no size', '[{ name: a, cache: { maxEntryBytes: lots } }]', 'spec.responses[0].cache.maxEntryBytes: expected a size like 65536, 64KiB or 10MiB, got "lots"'],
    ['a zero cap', '[{ name: a, hardening: { maxResponseBytes: 0 } }]', 'spec.responses[0].hardening.maxResponseBytes: must be more than 0'],
    ['a header name that is none', '[{ name: a, hardening: { stripHeaders: ["x a"] } }]', 'spec.responses[0].hardening.stripHeaders[0]: expected an HTTP header name, got "x a"'],
    [
      'a header value with a line break',
      '[{ name: a, hardening: { securityHeaders: { x-a: "a\\r\\nset-cookie: x" } } }]',
      'spec.responses[0].hardening.securityHeaders.x-a: expected a header value of visible characters (no line breaks or control characters), got "a\\r\\nset-cookie: x"',
    ],
    ['an unknown field', '[{ name: a, cache: { ttl: 5 } }]', 'spec.responses[0].cache.ttl: unknown field'],
    ['a non-boolean switch', '[{ name: a, cache: { cacheAuthenticated: yes please } }]', 'spec.responses[0].cache.cacheAuthenticated: expected boolean, got "yes please"'],
    ['a rule name used twice', '[{ name: a, cache: {} }, { name: a, hardening: {} }]', 'spec.responses[1].name: rule name "a" is already used by responses[0]'],
    ['a path pattern that never matches', '[{ name: a, match: { paths: ["orders"] }, cache: {} }]', 'spec.responses[0].match.paths[0]: expected a path starting with "/" (or "*"), got "orders"'],
  ])('refuses %s with the field and the reason', (_name, responses, line) => {
    expect(errorLines(route(responses))).toEqual([`${KEY}: ${line}`]);
  });

  it("refuses responses for a service of another namespace: they would change that service's answers", () => {
    expect(errorLines(route('[{ name: a, cache: {} }]', 'orders.billing'))).toEqual([
      `${KEY}: spec.responses: responses apply on orders.billing's own sidecar: only a Route in namespace billing (or meshgate-system) may set them`,
    ]);
    expect(() => validDocument(route('[{ name: a, cache: {} }]', 'orders.billing', '{ name: p1, namespace: meshgate-system }'))).not.toThrow();
  });

  it('fills the defaults, and its output validates again unchanged (the sidecar validates again)', () => {
    const first = validDocument(route('[{ name: a, cache: {}, hardening: { maxResponseBytes: 1MiB, securityHeaders: { X-Content-Type-Options: nosniff } } }]'));
    expect((first.spec.responses as unknown[])[0]).toEqual({
      name: 'a',
      cache: { maxEntryBytes: 1_048_576, cacheAuthenticated: false },
      hardening: { stripHeaders: [], maxResponseBytes: 1_048_576, securityHeaders: { 'x-content-type-options': 'nosniff' }, overrideSecurityHeaders: false },
    });
    const again = createPolicyValidator().validate(JSON.parse(JSON.stringify(first)), { file: 'api', index: 0 });
    expect(again.ok && again.document.document).toEqual(first);
  });
});

describe('Route responses: delivery', () => {
  const orders = { service: 'orders', namespace: 'shop' };
  const selectorOnlyFrontend = (responses: string) => validDocument(doc('Route', `selector: { services: [frontend] }\nservice: orders${responses}`));

  it("reaches the destination's snapshot even when the selector names only callers", () => {
    const withResponses = selectorOnlyFrontend('\nresponses: [{ name: a, cache: {} }]');
    expect(compileSnapshot([withResponses], [], orders).documents).toHaveLength(1);
    expect(compileSnapshot([withResponses], [], { service: 'frontend', namespace: 'shop' }).documents).toHaveLength(1);
    expect(compileSnapshot([withResponses], [], { service: 'users', namespace: 'shop' }).documents).toHaveLength(0);
  });

  it('applies to the destination only for its responses: its selector still names the callers whose routes it sets', () => {
    const d = selectorOnlyFrontend('\nresponses: [{ name: a, cache: {} }]');
    expect(documentApplies(d, orders)).toBe(true);
    // The destination's sidecar installs no routes or versions from it (src/sidecar/policy-enforcement.ts asks this).
    expect(selectorApplies(d, orders)).toBe(false);
    expect(selectorApplies(d, { service: 'frontend', namespace: 'shop' })).toBe(true);
  });

  it('leaves a Route without responses where its selector puts it (snapshots of other workloads unchanged)', () => {
    expect(compileSnapshot([selectorOnlyFrontend('')], [], orders).documents).toHaveLength(0);
  });
});
