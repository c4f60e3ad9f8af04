import { describe, expect, it } from 'vitest';
import { adminApiConfigSchema } from '../../../src/config/admin-api-schema.ts';
import { createRbac } from '../../../src/policy-server/rbac.ts';

const config = adminApiConfigSchema.parse({
  roleBindings: [
    { subjects: ['spiffe://cluster.local/ns/platform/sa/admin-bot', 'alice@example.com'], role: 'admin' },
    { subjects: ['spiffe://cluster.local/ns/dev/*', 'bob@example.com'], role: 'developer' },
    { subjects: ['carol@example.com', 'auditor-*'], role: 'viewer' },
    // A second, weaker binding for bob: the strongest role wins.
    { subjects: ['bob@example.com'], role: 'viewer' },
  ],
  productionNamespaces: ['prod', 'payments-*'],
});
const rbac = createRbac(config);

const SUBJECTS = { admin: 'alice@example.com', developer: 'bob@example.com', viewer: 'carol@example.com' } as const;

describe('createRbac', () => {
  // role × action × namespace kind: the whole matrix, so a change to one cell shows.
  const table = [
    ['admin', 'read', 'shop', true],
    ['admin', 'read', 'prod', true],
    ['admin', 'write', 'shop', true],
    ['admin', 'write', 'prod', true],
    ['developer', 'read', 'shop', true],
    ['developer', 'read', 'prod', true],
    ['developer', 'write', 'shop', true],
    ['developer', 'write', 'prod', false],
    ['viewer', 'read', 'shop', true],
    ['viewer', 'read', 'prod', true],
    ['viewer', 'write', 'shop', false],
    ['viewer', 'write', 'prod', false],
  ] as const;

  it.each(table)('%s %s in namespace %s -> allowed %s', (role, action, namespace, allowed) => {
    const decision = rbac.decide(SUBJECTS[role], action, namespace);
    expect(decision).toMatchObject({ allowed, role });
  });

  it('names the reason of a refusal', () => {
    expect(rbac.decide(SUBJECTS.developer, 'write', 'prod')).toEqual({ allowed: false, role: 'developer', reason: 'role developer may not write to production namespace prod' });
    expect(rbac.decide(SUBJECTS.viewer, 'write', 'shop')).toEqual({ allowed: false, role: 'viewer', reason: 'role viewer may not write' });
  });

  it('fails closed for a subject with no binding: no reads, no writes', () => {
    for (const action of ['read', 'write'] as const) {
      expect(rbac.decide('mallory@example.com', action, 'shop')).toEqual({ allowed: false, role: undefined, reason: 'no role binding for mallory@example.com' });
    }
    expect(createRbac(adminApiConfigSchema.parse({})).decide('alice@example.com', 'read')).toMatchObject({ allowed: false });
  });

  it('matches `*` suffix wildcards on subjects, and nothing else', () => {
    expect(rbac.roleOf('spiffe://cluster.local/ns/dev/sa/ci')).toBe('developer');
    expect(rbac.roleOf('spiffe://cluster.local/ns/devops/sa/ci')).toBeUndefined();
    expect(rbac.roleOf('auditor-7')).toBe('viewer');
    expect(rbac.roleOf('xauditor-7')).toBeUndefined();
    expect(rbac.roleOf('spiffe://cluster.local/ns/platform/sa/admin-bot-2')).toBeUndefined();
  });

  it('gives the strongest role of several matching bindings', () => {
    expect(rbac.roleOf('bob@example.com')).toBe('developer');
  });

  it('treats wildcard production namespaces and the mesh root namespace as production', () => {
    expect(rbac.isProduction('payments-eu')).toBe(true);
    expect(rbac.isProduction('meshgate-system')).toBe(true);
    expect(rbac.isProduction('shop')).toBe(false);
    expect(rbac.decide(SUBJECTS.developer, 'write', 'payments-eu')).toMatchObject({ allowed: false });
    expect(rbac.decide(SUBJECTS.developer, 'write', 'meshgate-system')).toMatchObject({ allowed: false });
    expect(rbac.decide(SUBJECTS.admin, 'write', 'meshgate-system')).toMatchObject({ allowed: true });
  });

  it('refuses a write that names no namespace, even to an admin', () => {
    expect(rbac.decide(SUBJECTS.admin, 'write')).toMatchObject({ allowed: false, reason: 'write without a namespace' });
  });
});
