import { describe, expect, it } from 'vitest';
import { codesOf, isReasonCode, REASON_CODES, reasonCode } from '../../../src/core/reason-codes.ts';

describe('the one reason-code table', () => {
  it('holds every surface, each code in one section', () => {
    const all = [...codesOf('data'), ...codesOf('ca'), ...codesOf('admin')];
    expect(new Set(all).size).toBe(all.length);
    expect(Object.keys(REASON_CODES).sort()).toEqual([...all].sort());
    expect(codesOf('ca').every((code) => code.startsWith('ca.'))).toBe(true);
    expect(codesOf('admin').every((code) => code.startsWith('admin.'))).toBe(true);
  });

  it('gives each code the statuses of its surface: HTTP and gRPC, gRPC at the CA, HTTP on the admin APIs', () => {
    expect(reasonCode('authz.denied')).toMatchObject({ http: 403, grpc: 7 });
    expect(reasonCode('ca.rate_limited')).toEqual({ grpc: 8, description: expect.any(String) });
    expect(reasonCode('admin.method_not_allowed')).toEqual({ http: 405, description: expect.any(String) });
  });

  it('tells a code from outside by surface: a peer sidecar cannot pass off a CA or admin code as a data-plane one', () => {
    expect(isReasonCode('data', 'upstream.reset')).toBe(true);
    expect(isReasonCode('data', 'ca.internal')).toBe(false);
    expect(isReasonCode('data', 'admin.internal')).toBe(false);
    expect(isReasonCode('ca', 'ca.internal')).toBe(true);
    expect(isReasonCode('admin', 'toString')).toBe(false);
  });
});
