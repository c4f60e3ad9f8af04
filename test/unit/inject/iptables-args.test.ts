import { describe, expect, it } from 'vitest';
import { buildIptablesArgs } from '../../../src/inject/iptables-args.ts';
import { parseIptablesFlags } from '../../../src/interception/iptables-flags.ts';

const BASE = { inboundPort: 15006, outboundPort: 15001, proxyUid: 1337, appPorts: [8080], excludeInboundPorts: [], excludeOutboundPorts: [], excludeOutboundCidrs: [] };

describe('meshgate iptables argv as the injector writes it', () => {
  it('builds the flags in the documented spelling, and the command parses them back', () => {
    const settings = { ...BASE, appPorts: [8080, 9090], excludeInboundPorts: [8081], excludeOutboundPorts: [5432], excludeOutboundCidrs: ['10.96.0.1/32', 'fd00::/8'] };
    const args = buildIptablesArgs(settings);
    expect(args.join(' ')).toBe(
      '--inbound-port 15006 --outbound-port 15001 --proxy-uid 1337 --app-ports 8080,9090 --exclude-inbound-ports 8081 --exclude-outbound-ports 5432 --exclude-outbound-cidrs 10.96.0.1/32,fd00::/8',
    );
    // IPv6 is not captured, so its ranges are set aside (the command warns), not refused.
    expect(parseIptablesFlags(args)).toEqual({ spec: { ...settings, excludeOutboundCidrs: ['10.96.0.1/32'] }, mode: 'apply', ignoredV6: ['fd00::/8'] });
  });

  it('omits empty lists, which the command reads as empty; --dry-run and --cleanup select the mode', () => {
    const args = buildIptablesArgs({ ...BASE, appPorts: [], mode: 'dry-run' });
    expect(args).toEqual(['--inbound-port', '15006', '--outbound-port', '15001', '--proxy-uid', '1337', '--dry-run']);
    expect(parseIptablesFlags(args)).toMatchObject({ spec: { appPorts: [], excludeOutboundCidrs: [] }, mode: 'dry-run' });
    expect(buildIptablesArgs({ ...BASE, mode: 'cleanup' }).at(-1)).toBe('--cleanup');
    expect(parseIptablesFlags(buildIptablesArgs({ ...BASE, mode: 'cleanup' })).mode).toBe('cleanup');
  });
});
