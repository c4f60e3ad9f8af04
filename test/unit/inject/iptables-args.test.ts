import { describe, expect, it } from 'vitest';
import { buildIptablesArgs, IptablesArgsError, parseIptablesArgs } from '../../../src/inject/iptables-args.ts';

const BASE = { inboundPort: 15006, outboundPort: 15001, proxyUid: 1337, appPorts: [8080], excludeInboundPorts: [], excludeOutboundPorts: [], excludeOutboundCidrs: [] };

describe('meshgate iptables argv', () => {
  it('builds the flags in the documented spelling and parses them back', () => {
    const settings = { ...BASE, appPorts: [8080, 9090], excludeInboundPorts: [8081], excludeOutboundPorts: [5432], excludeOutboundCidrs: ['10.96.0.1/32', 'fd00::/8'] };
    const args = buildIptablesArgs(settings);
    expect(args.join(' ')).toBe(
      '--inbound-port 15006 --outbound-port 15001 --proxy-uid 1337 --app-ports 8080,9090 --exclude-inbound-ports 8081 --exclude-outbound-ports 5432 --exclude-outbound-cidrs 10.96.0.1/32,fd00::/8',
    );
    expect(parseIptablesArgs(args)).toEqual({ ...settings, mode: 'apply' });
  });

  it('omits empty lists and reads their absence as empty; --dry-run and --cleanup select the mode', () => {
    const args = buildIptablesArgs({ ...BASE, appPorts: [], mode: 'dry-run' });
    expect(args).toEqual(['--inbound-port', '15006', '--outbound-port', '15001', '--proxy-uid', '1337', '--dry-run']);
    expect(parseIptablesArgs(args)).toMatchObject({ appPorts: [], excludeOutboundCidrs: [], mode: 'dry-run' });
    expect(parseIptablesArgs(['--cleanup']).mode).toBe('cleanup');
    expect(parseIptablesArgs(['--app-ports=8080,8443'])).toMatchObject({ inboundPort: 15006, outboundPort: 15001, proxyUid: 1337, appPorts: [8080, 8443] });
  });

  it.each([
    [['--app-ports', '80,http'], '--app-ports: expected ports 1-65535, got "http"'],
    [['--inbound-port', '70000'], '--inbound-port: expected ports 1-65535, got "70000"'],
    [['--exclude-outbound-cidrs', '10.0.0.1'], '--exclude-outbound-cidrs: expected CIDRs like 10.0.0.0/8 or fd00::/8, got "10.0.0.1"'],
    [['--exclude-outbound-cidrs', '10.0.0.0/33'], 'got "10.0.0.0/33"'],
    [['--proxy-uid', 'istio'], '--proxy-uid: expected a numeric uid, got "istio"'],
    [['--dry-run', '--cleanup'], '--dry-run and --cleanup exclude each other'],
    [['--app-ports'], '--app-ports: missing value'],
    [['--app-ports', '1', '--app-ports', '2'], '--app-ports: given twice'],
    [['--redirect-all'], 'unknown option "--redirect-all"'],
  ])('%j is refused: %s', (argv, message) => {
    expect(() => parseIptablesArgs(argv)).toThrow(IptablesArgsError);
    expect(() => parseIptablesArgs(argv)).toThrow(message);
  });
});
