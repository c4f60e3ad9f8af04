import { describe, expect, it } from 'vitest';
import { runIptables } from '../../../src/cli/iptables.ts';
import type { InterceptionSpec } from '../../../src/config/interception-spec.ts';
import { buildRules, restoreText, specProblems } from '../../../src/interception/iptables-rules.ts';
import { classifyFirstBytes } from '../../../src/interception/protocol-sniff.ts';

const spec: InterceptionSpec = {
  inboundPort: 15006,
  outboundPort: 15001,
  proxyUid: 1337,
  appPorts: [8080, 9090],
  excludeInboundPorts: [8081],
  excludeOutboundPorts: [5432],
  excludeOutboundCidrs: ['10.96.0.1/32', '169.254.169.254/32'],
};

// The whole rule list, pinned: a change here changes what every injected pod runs.
const GOLDEN = `*nat
:MESHGATE_INBOUND - [0:0]
:MESHGATE_IN_REDIRECT - [0:0]
:MESHGATE_OUTPUT - [0:0]
:MESHGATE_REDIRECT - [0:0]
-A MESHGATE_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A MESHGATE_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A MESHGATE_INBOUND -p tcp --dport 15006 -j RETURN
-A MESHGATE_INBOUND -p tcp --dport 15001 -j RETURN
-A MESHGATE_INBOUND -p tcp --dport 15000 -j RETURN
-A MESHGATE_INBOUND -p tcp --dport 15443 -j RETURN
-A MESHGATE_INBOUND -p tcp --dport 8081 -j RETURN
-A MESHGATE_INBOUND -p tcp -j MESHGATE_IN_REDIRECT
-A MESHGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A MESHGATE_OUTPUT -o lo -j RETURN
-A MESHGATE_OUTPUT -p tcp --dport 5432 -j RETURN
-A MESHGATE_OUTPUT -d 10.96.0.1/32 -j RETURN
-A MESHGATE_OUTPUT -d 169.254.169.254/32 -j RETURN
-A MESHGATE_OUTPUT -j MESHGATE_REDIRECT
-A PREROUTING -p tcp -j MESHGATE_INBOUND
-A OUTPUT -p tcp -j MESHGATE_OUTPUT
COMMIT
`;

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  return runIptables(args, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) }).then((code) => ({ code, stdout, stderr }));
}

describe('iptables rules', () => {
  it('are the golden list for a pod with two app ports, a probe port, a database port and two CIDRs', () => {
    expect(restoreText(buildRules(spec))).toBe(GOLDEN);
  });

  it('leave out jumps that are already installed, so a re-run does not stack them', () => {
    const set = buildRules(spec);
    const text = restoreText(set, []);
    expect(text).not.toContain('-A PREROUTING');
    expect(text).not.toContain('-A OUTPUT');
    expect(text).toContain(':MESHGATE_OUTPUT - [0:0]'); // declared again: iptables-restore --noflush flushes it
  });

  it('exempt the sidecar uid before anything can redirect it', () => {
    const output = buildRules({ ...spec, proxyUid: 4242 }).rules.filter((r) => r.chain === 'MESHGATE_OUTPUT');
    expect(output[0]!.args.join(' ')).toBe('-m owner --uid-owner 4242 -j RETURN');
    expect(output.at(-1)!.args.join(' ')).toBe('-j MESHGATE_REDIRECT');
  });

  it('refuse an app port that is also excluded from inbound capture, since mesh calls to it would reach the app encrypted', () => {
    expect(specProblems({ ...spec, excludeInboundPorts: [8080] })).toEqual([
      '--exclude-inbound-ports: 8080 is also an app port; mesh calls to it would reach the app still encrypted (serve probes on another port)',
    ]);
    expect(specProblems({ ...spec, appPorts: [15001] })).toEqual(['--app-ports: 15001 is a port of the sidecar']);
    expect(specProblems(spec)).toEqual([]);
  });
});

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
    expect(res).toEqual({ code: 0, stdout: GOLDEN, stderr: '' });
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

describe('protocol detection on a captured connection', () => {
  it.each([
    ['GET / HTTP/1.1\r\n', 'http'],
    ['PRI * HTTP/2.0\r\n', 'http'],
    ['OPTIONS * HTTP/1.1', 'http'],
    ['DELETE ', 'http'],
    ['G', 'more'],
    ['PO', 'more'],
    ['DELET', 'more'],
    ['\x16\x03\x01\x02\x00', 'other'], // a TLS client hello
    ['\x00\x00\x00\x08\x04\xd2\x16\x2f', 'other'], // a PostgreSQL SSLRequest
    ['GET/', 'other'],
    ['get / HTTP/1.1', 'other'],
  ])('%j is %s', (bytes, kind) => {
    expect(classifyFirstBytes(Buffer.from(bytes, 'latin1'))).toBe(kind);
  });
});
