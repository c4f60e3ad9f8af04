import { describe, expect, it } from 'vitest';
import { runIptables } from '../../../src/cli/iptables.ts';
import { GOLDEN_RULES } from '../interception/iptables-golden.ts';

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  return runIptables(args, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) }).then((code) => ({ code, stdout, stderr }));
}

describe('meshgate iptables', () => {
  it('--dry-run prints the rules of the flags the injector passes and changes nothing', async () => {
    const res = await cli([
      '--inbound-port',
      '15006',
      '--outbound-port',
      '15001',
      '--proxy-uid',
      '1337',
      '--app-ports',
      '8080,9090',
      '--exclude-inbound-ports',
      '8081',
      '--exclude-outbound-ports',
      '5432',
      '--exclude-outbound-cidrs',
      '10.96.0.1/32,169.254.169.254',
      '--dry-run',
    ]);
    expect(res).toEqual({ code: 0, stdout: GOLDEN_RULES, stderr: '' });
  });

  it('accepts the IPv6 ranges of a dual-stack cluster and says it ignores them, since IPv6 is not captured', async () => {
    const res = await cli(['--exclude-outbound-cidrs', '10.96.0.0/12,fd00:10:96::/112', '--dry-run']);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('-A MESHGATE_OUTPUT -d 10.96.0.0/12 -j RETURN');
    expect(res.stdout).not.toContain('fd00');
    expect(res.stderr).toBe('meshgate iptables: warning: IPv6 CIDRs ignored (the rules capture IPv4 only): fd00:10:96::/112\n');
  });

  it.each([
    [['--bogus'], /^meshgate iptables: Unknown option '--bogus'/],
    [['--inbound-port', '70000', '--dry-run'], /^meshgate iptables: --inbound-port: expected a port from 1 to 65535, got "70000"$/],
    [['--proxy-uid', 'sidecar', '--dry-run'], /^meshgate iptables: --proxy-uid: expected a numeric uid, got "sidecar"$/],
    [['--exclude-outbound-cidrs', 'cluster', '--dry-run'], /^meshgate iptables: --exclude-outbound-cidrs: expected CIDRs like 10.0.0.0\/8, got "cluster"$/],
    [['--exclude-outbound-cidrs', '10.0.0.0/33', '--dry-run'], /--exclude-outbound-cidrs/],
    [['--dry-run', '--cleanup'], /^meshgate iptables: --dry-run and --cleanup exclude each other$/],
    [['--app-ports', '8080', '--exclude-inbound-ports', '8080', '--dry-run'], /8080 is also an app port/],
    [['extra', '--dry-run'], /^meshgate iptables: unexpected argument "extra"$/],
  ])('refuses %j with one line and exit 2', async (args, message) => {
    const res = await cli(args);
    expect(res.code).toBe(2);
    expect(res.stdout).toBe('');
    expect(res.stderr.split('\n')).toHaveLength(2); // one line, then the final newline
    expect(res.stderr.trimEnd()).toMatch(message);
  });
});
