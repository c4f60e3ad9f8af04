import { describe, expect, it } from 'vitest';
import { buildRules, restoreText, specProblems } from '../../../src/interception/iptables-rules.ts';
import { classifyFirstBytes } from '../../../src/interception/protocol-sniff.ts';
import { GOLDEN_RULES, GOLDEN_SPEC as spec } from './iptables-golden.ts';

describe('iptables rules', () => {
  it('are the golden list for a pod with two app ports, a probe port, a database port and two CIDRs', () => {
    expect(restoreText(buildRules(spec))).toBe(GOLDEN_RULES);
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
