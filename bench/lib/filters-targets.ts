import { writeFiltersPolicy } from './filters-policy.ts';
import { probe } from './http-probe.ts';
import { startMeshgateSidecar } from './target-meshgate.ts';
import type { Target } from './target.ts';

/*
 * bench:filters rows: one sidecar, inbound listener -> upstream (1 hop), the
 * same generated config (lib/target-meshgate.ts) for both; "on" adds only a
 * `policy:` section whose server cannot answer (127.0.0.1:1), so the sidecar
 * boots from the snapshot file lib/filters-policy.ts wrote in its stateDir,
 * and the load carries the bearer JWT. mTLS stays DISABLE (as in npm run
 * bench): the policy section needs no identity to boot from disk.
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
      const stateDir = context.group.tempDir('meshgate-bench-filters-state-');
      const policy = await writeFiltersPolicy(stateDir);
      const start = await startMeshgateSidecar(context, 'inbound', {
        policy: {
          servers: ['127.0.0.1:1'],
          stateDir,
          // Few reconnect warnings while the load runs; the disk copy applies throughout.
          reconnect: { base: '30s', max: '5m' },
          maxStaleness: '1h',
        },
      });
      if (!start.ok) return start;
      const { url, headers, stop } = start.started;
      // The filters must be in force, or this row would measure the "off" path:
      // a call without the token is refused by authn, one to an unmatched path by authz.
      const problems: string[] = [];
      try {
        // Admin /live answers before the policy is loaded and the inbound listener opens.
        const anonymous = await probeUntilListening(url, headers, context.startTimeoutMs);
        if (anonymous.status !== 401) problems.push(`GET / without a token got HTTP ${anonymous.status}, expected 401 (authn)`);
        const denied = await probe(new URL('/admin/x', url).href, { ...headers, authorization: policy.authorization }, 3000);
        if (denied.status !== 403) problems.push(`GET /admin/x with the token got HTTP ${denied.status}, expected 403 (authz)`);
      } catch (err) {
        problems.push(`probe: ${(err as Error).message}`);
      }
      if (problems.length > 0) {
        await stop();
        return { ok: false, reason: `policy not in force (${policy.file}): ${problems.join('; ')}` };
      }
      return { ok: true, started: { url, headers: { ...headers, authorization: policy.authorization }, stop } };
    },
  };
}

/** GET `url`, retried every 100 ms while the connection is refused, up to `deadlineMs`. */
async function probeUntilListening(url: string, headers: Readonly<Record<string, string>>, deadlineMs: number): Promise<Awaited<ReturnType<typeof probe>>> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await probe(url, headers, 3000);
    } catch (err) {
      if (Date.now() >= deadline || !/ECONNREFUSED/.test((err as Error).message)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
