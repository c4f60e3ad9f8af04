import { createHmac, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
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

/** The HMAC example's window in the row: longer than any run, so one signature made at start stays valid (the example keeps no replay cache, so every call is verified in full). */
const HMAC_WINDOW_SECONDS = 3600;

/**
 * "allow-rule" plus the HMAC request-signature example of
 * deploy/examples/filters (the key in its config, hex), on every call: the
 * load carries x-timestamp and x-signature signed once at start, which the
 * check verifies on every call (the host's meshgate.hmacSha256), so wrk can
 * drive it although it cannot sign each request.
 */
export function createHmacCheckTarget(): Target {
  return {
    id: 'hmac-check',
    label: 'meshgate inbound (one ALLOW rule + the HMAC signature example)',
    async start(context) {
      const selector = { services: ['bench'] };
      const key = randomBytes(32);
      const source = await readFile(new URL('../../deploy/examples/filters/hmac-signature.ts', import.meta.url), 'utf8');
      const documents = [
        {
          apiVersion: 'meshgate.dev/v1',
          kind: 'Filter',
          metadata: { name: 'hmac', namespace: 'default' },
          spec: { selector, source, config: { key: key.toString('hex'), windowSeconds: HMAC_WINDOW_SECONDS } },
        },
        {
          apiVersion: 'meshgate.dev/v1',
          kind: 'AuthorizationPolicy',
          metadata: { name: 'allow', namespace: 'default' },
          spec: { selector, action: 'ALLOW', rules: [{ name: 'load', to: [{ paths: ['/'] }] }] },
        },
      ];
      const { start, snapshot } = await startMeshgateWithPolicy(context, documents, 'bench/lib/filters-targets.ts');
      if (!start.ok) return start;
      const { url, headers, stop } = start.started;
      const timestamp = String(Math.floor(Date.now() / 1000));
      const signature = createHmac('sha256', key).update(`GET\n/\n\n${timestamp}`).digest('hex');
      const unsigned = await probe(url, headers, 3000).catch((err: Error) => ({ status: `error ${err.message}` }));
      if (unsigned.status !== 403) {
        await stop();
        return { ok: false, reason: `check not in force (${snapshot.file}): an unsigned call got ${unsigned.status}, expected 403 filter.denied` };
      }
      return { ok: true, started: { ...start.started, headers: { ...headers, 'x-timestamp': timestamp, 'x-signature': signature } } };
    },
  };
}
