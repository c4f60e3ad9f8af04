import { createFiltersPolicy } from './filters-policy.ts';
import { probe } from './http-probe.ts';
import type { Target } from './target.ts';
import { startMeshgateSidecar } from './target-meshgate.ts';
import { startMeshgateWithPolicy } from './target-meshgate-policy.ts';

/*
 * bench:filters rows: one sidecar, inbound listener -> upstream (1 hop), the
 * same generated config (lib/target-meshgate.ts) for both; "on" adds only a
 * `policy:` section whose server cannot answer, so the sidecar boots from the
 * snapshot file lib/target-meshgate-policy.ts wrote in its stateDir, and the
 * load carries the bearer JWT.
 */

export function createFiltersOffTarget(): Target {
  return {
    id: 'off',
    label: 'meshgate inbound (filters off)',
    start: (context) => startMeshgateSidecar(context, 'inbound'),
  };
}

export function createFiltersOnTarget(): Target {
  return {
    id: 'on',
    label: 'meshgate inbound (all filters on)',
    async start(context) {
      const policy = await createFiltersPolicy();
      const { start, snapshot } = await startMeshgateWithPolicy(context, policy.documents, 'bench/lib/filters-policy.ts');
      if (!start.ok) return start;
      const { url, headers, stop } = start.started;
      // The filters must be in force, or this row would measure the "off" path:
      // a call without the token is refused by authn, one to an unmatched path by authz.
      const problems: string[] = [];
      try {
        const anonymous = await probe(url, headers, 3000);
        if (anonymous.status !== 401) problems.push(`GET / without a token got HTTP ${anonymous.status}, expected 401 (authn)`);
        const denied = await probe(new URL('/admin/x', url).href, { ...headers, authorization: policy.authorization }, 3000);
        if (denied.status !== 403) problems.push(`GET /admin/x with the token got HTTP ${denied.status}, expected 403 (authz)`);
      } catch (err) {
        problems.push(`probe: ${(err as Error).message}`);
      }
      if (problems.length > 0) {
        await stop();
        return { ok: false, reason: `policy not in force (${snapshot.file}): ${problems.join('; ')}` };
      }
      return { ok: true, started: { ...start.started, headers: { ...headers, authorization: policy.authorization } } };
    },
  };
}

/** A trivial check of your own: allows every call but one carrying `x-bench-deny`, so the row can prove it is in force. */
const TRIVIAL_CHECK = `export default function check(call: { headers: Record<string, string> }) {
  return call.headers['x-bench-deny'] === undefined ? { allow: true } : { deny: { code: 'bench' } };
}`;

/**
 * "off" plus one ALLOW rule (a policy section denies by default), with or
 * without one Filter document (a check of your own, issue #16) run in the
 * QuickJS sandbox on every call: the two rows tell the check's cost apart.
 */
export function createUserCheckTarget(withCheck: boolean): Target {
  return {
    id: withCheck ? 'user-check' : 'allow-rule',
    label: withCheck ? 'meshgate inbound (one ALLOW rule + one trivial check of your own)' : 'meshgate inbound (one ALLOW rule)',
    async start(context) {
      const selector = { services: ['bench'] };
      const documents = [
        ...(withCheck ? [{ apiVersion: 'meshgate.dev/v1', kind: 'Filter', metadata: { name: 'trivial', namespace: 'default' }, spec: { selector, source: TRIVIAL_CHECK } }] : []),
        // A policy section denies by default; one ALLOW rule for the load's path (~0.4 µs in process, see the chain table).
        {
          apiVersion: 'meshgate.dev/v1',
          kind: 'AuthorizationPolicy',
          metadata: { name: 'allow', namespace: 'default' },
          spec: { selector, action: 'ALLOW', rules: [{ name: 'load', to: [{ paths: ['/'] }] }] },
        },
      ];
      const { start, snapshot } = await startMeshgateWithPolicy(context, documents, 'bench/lib/filters-targets.ts');
      if (!start.ok || !withCheck) return start;
      const { url, headers, stop } = start.started;
      const refused = await probe(url, { ...headers, 'x-bench-deny': '1' }, 3000).catch((err: Error) => ({ status: `error ${err.message}` }));
      if (refused.status !== 403) {
        await stop();
        return { ok: false, reason: `check not in force (${snapshot.file}): a call with x-bench-deny got ${refused.status}, expected 403 filter.denied` };
      }
      return start;
    },
  };
}
