import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InterceptionSpec } from '../../src/config/interception-spec.ts';
import type { CommandRunner } from '../../src/interception/iptables-apply.ts';
import { applyRules } from '../../src/interception/iptables-apply.ts';
import { buildRules } from '../../src/interception/iptables-rules.ts';
import { createNetns, deleteNetns, netnsUnavailable, run, runIn, sweepNetns, uniqueName } from '../helpers/netns.ts';

/*
 * `meshgate iptables` against the system's real iptables (Debian's nf_tables
 * backend in CI) inside a network namespace the test creates: installed twice
 * it leaves one copy, changed flags replace the rules, cleanup removes only
 * what it added. Runs as root; elsewhere it says why it is skipped.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PREFIX = 'mgipt-';
const skip = await netnsUnavailable(['iptables', 'iptables-restore']);
if (skip) console.log(`iptables-apply.test.ts skipped: ${skip}`);

describe.skipIf(skip !== undefined)('meshgate iptables in a network namespace', () => {
  const ns = uniqueName(PREFIX);
  const meshgate = (...args: string[]) => runIn(ns, process.execPath, [`${ROOT}bin/meshgate.js`, 'iptables', ...args]);
  // The same code the CLI runs, in-process (a CLI start costs a second or two on a busy machine).
  const inNs: CommandRunner = (command, args, stdin) => runIn(ns, command, args, { input: stdin });
  const base: InterceptionSpec = { inboundPort: 15006, outboundPort: 15001, proxyUid: 1337, appPorts: [8080], excludeInboundPorts: [], excludeOutboundPorts: [], excludeOutboundCidrs: [] };
  /** The nat table without counters and comments, so two dumps compare equal. */
  const nat = async () =>
    (await runIn(ns, 'iptables-save', ['-t', 'nat'])).stdout
      .split('\n')
      .filter((line) => line !== '' && !line.startsWith('#'))
      .map((line) => line.replace(/\[\d+:\d+\]/, '[0:0]'))
      .join('\n');

  beforeAll(async () => {
    await sweepNetns(PREFIX, 10 * 60_000); // leftovers of a crashed run, never a run going on now
    await createNetns(ns);
    // Someone else's rule in the same table: ours must leave it alone.
    await runIn(ns, 'iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '53', '-j', 'RETURN']);
  });
  afterAll(async () => {
    await deleteNetns(ns);
  });

  it('installs the rules once however often it runs, replaces them when the flags change, and cleans up only its own', async () => {
    const first = await meshgate('--app-ports', '8080', '--exclude-inbound-ports', '8081', '--exclude-outbound-cidrs', '10.96.0.0/12');
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const installed = await nat();
    expect(installed).toContain('-A PREROUTING -p tcp -j MESHGATE_INBOUND');
    expect(installed).toContain('-A OUTPUT -p tcp -j MESHGATE_OUTPUT');
    expect(installed).toContain('-A MESHGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN');
    expect(installed).toContain('-A MESHGATE_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006');

    expect(await applyRules(buildRules({ ...base, excludeInboundPorts: [8081], excludeOutboundCidrs: ['10.96.0.0/12'] }), inNs)).toEqual({ jumpsAdded: 0 });
    expect(await nat()).toBe(installed);

    await applyRules(buildRules({ ...base, excludeOutboundPorts: [5432] }), inNs);
    const changed = await nat();
    expect(changed).toContain('-A MESHGATE_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN');
    expect(changed).not.toContain('8081');
    expect(changed).not.toContain('10.96.0.0/12');
    expect(changed.match(/-j MESHGATE_INBOUND/g)).toHaveLength(1);

    const cleaned = await meshgate('--cleanup');
    expect(cleaned.code).toBe(0);
    const after = await nat();
    expect(after).not.toContain('MESHGATE');
    expect(after).toContain('-A OUTPUT -p udp -m udp --dport 53 -j RETURN');
    expect((await meshgate('--cleanup')).code).toBe(0); // nothing left to remove is fine
  });

  it('says in one line, exit 1, when iptables refuses (no NET_ADMIN)', async () => {
    const res = await run('ip', [
      'netns',
      'exec',
      ns,
      'setpriv',
      '--reuid=1000',
      '--regid=1000',
      '--clear-groups',
      '--inh-caps=-all',
      process.execPath,
      `${ROOT}bin/meshgate.js`,
      'iptables',
      '--app-ports',
      '8080',
    ]);
    expect(res.code).toBe(1);
    expect(res.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(res.stderr).toMatch(/^meshgate iptables: iptables failed: .*\(needs root or the NET_ADMIN capability\)/);
    expect(await nat()).not.toContain('MESHGATE');
  });
});
