import type { AdminRbacConfig, AdminRole } from '../config/admin-api-schema.ts';
import { MESH_ROOT_NAMESPACE } from '../policy/types.ts';

type AdminAction = 'read' | 'write';

type RbacDecision = { readonly allowed: true; readonly role: AdminRole } | { readonly allowed: false; readonly role: AdminRole | undefined; readonly reason: string };

export interface Rbac {
  /** The strongest role bound to the subject; undefined when no binding matches. */
  roleOf(subject: string): AdminRole | undefined;
  /** Writes name the document's namespace; a write without one is refused. */
  decide(subject: string, action: AdminAction, namespace?: string): RbacDecision;
  isProduction(namespace: string): boolean;
}

/** Roles are nested (viewer ⊂ developer ⊂ admin), so several bindings resolve to the strongest. */
const RANK: Readonly<Record<AdminRole, number>> = { viewer: 1, developer: 2, admin: 3 };

type Matcher = (value: string) => boolean;

/** Exact, or a prefix when the pattern ends in `*` (the schema allows `*` nowhere else). */
function compilePatterns(patterns: readonly string[]): Matcher {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const p of patterns) {
    if (p.endsWith('*')) prefixes.push(p.slice(0, -1));
    else exact.add(p);
  }
  return (value) => exact.has(value) || prefixes.some((prefix) => value.startsWith(prefix));
}

/**
 * Role-based access to the admin API. Fail closed: a subject without a
 * binding gets nothing, not even reads. The mesh root namespace is always
 * production, because its documents apply to every workload, production ones
 * included.
 */
export function createRbac(config: AdminRbacConfig): Rbac {
  const bindings = config.roleBindings.map((b) => ({ matches: compilePatterns(b.subjects), role: b.role }));
  const production = compilePatterns([...config.productionNamespaces, MESH_ROOT_NAMESPACE]);

  function roleOf(subject: string): AdminRole | undefined {
    let best: AdminRole | undefined;
    for (const b of bindings) {
      if (b.matches(subject) && (best === undefined || RANK[b.role] > RANK[best])) best = b.role;
    }
    return best;
  }

  return {
    roleOf,
    isProduction: production,
    decide(subject, action, namespace) {
      const role = roleOf(subject);
      if (role === undefined) return { allowed: false, role, reason: `no role binding for ${subject}` };
      if (action === 'read') return { allowed: true, role };
      if (namespace === undefined) return { allowed: false, role, reason: 'write without a namespace' };
      if (role === 'admin') return { allowed: true, role };
      if (role === 'viewer') return { allowed: false, role, reason: 'role viewer may not write' };
      if (production(namespace)) return { allowed: false, role, reason: `role developer may not write to production namespace ${namespace}` };
      return { allowed: true, role };
    },
  };
}
