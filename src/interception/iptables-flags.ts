import { isIPv4, isIPv6 } from 'node:net';
import { parseArgs } from 'node:util';
import { IPTABLES_FLAGS as F, type InterceptionSpec, IPTABLES_DEFAULTS, type IptablesMode } from '../config/interception-spec.ts';

/*
 * The flags of `meshgate iptables`, read here and nowhere else: the command
 * parses them, and the injector's tests read the init containers it writes
 * back through this same parser (src/inject/iptables-args.ts builds them).
 */

/** A bad flag or value, worded as the one line the CLI prints. */
export class IptablesFlagError extends Error {}

export function parseIptablesFlags(args: string[]): { spec: InterceptionSpec; mode: IptablesMode; ignoredV6: string[] } {
  const { values, positionals } = parseArgs({
    args,
    options: {
      [F.inboundPort]: { type: 'string', default: String(IPTABLES_DEFAULTS.inboundPort) },
      [F.outboundPort]: { type: 'string', default: String(IPTABLES_DEFAULTS.outboundPort) },
      [F.proxyUid]: { type: 'string', default: String(IPTABLES_DEFAULTS.proxyUid) },
      [F.appPorts]: { type: 'string', default: '' },
      [F.excludeInboundPorts]: { type: 'string', default: '' },
      [F.excludeOutboundPorts]: { type: 'string', default: '' },
      [F.excludeOutboundCidrs]: { type: 'string', default: '' },
      [F.dryRun]: { type: 'boolean', default: false },
      [F.cleanup]: { type: 'boolean', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 0) throw new IptablesFlagError(`unexpected argument "${positionals[0]}"`);
  if (values['dry-run'] && values.cleanup) throw new IptablesFlagError('--dry-run and --cleanup exclude each other');
  const spec: InterceptionSpec = {
    inboundPort: port('inbound-port', values['inbound-port']),
    outboundPort: port('outbound-port', values['outbound-port']),
    proxyUid: uid(values['proxy-uid']),
    appPorts: list(values['app-ports']).map((p) => port('app-ports', p)),
    excludeInboundPorts: list(values['exclude-inbound-ports']).map((p) => port('exclude-inbound-ports', p)),
    excludeOutboundPorts: list(values['exclude-outbound-ports']).map((p) => port('exclude-outbound-ports', p)),
    excludeOutboundCidrs: [],
  };
  const cidrs = list(values['exclude-outbound-cidrs']).map(cidr);
  return {
    spec: { ...spec, excludeOutboundCidrs: cidrs.filter((c) => c.family === 4).map((c) => c.text) },
    mode: values['dry-run'] ? 'dry-run' : values.cleanup ? 'cleanup' : 'apply',
    ignoredV6: cidrs.filter((c) => c.family === 6).map((c) => c.text),
  };
}

function list(text: string): string[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

function port(flag: string, text: string): number {
  const n = /^\d{1,5}$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 1 && n <= 65535)) throw new IptablesFlagError(`--${flag}: expected a port from 1 to 65535, got "${text}"`);
  return n;
}

function uid(text: string): number {
  const n = /^\d{1,10}$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 0 && n < 2 ** 32 - 1)) throw new IptablesFlagError(`--proxy-uid: expected a numeric uid, got "${text}"`);
  return n;
}

function cidr(text: string): { family: 4 | 6; text: string } {
  const [address = '', bits, extra] = text.split('/');
  const family = isIPv4(address) ? 4 : isIPv6(address) ? 6 : undefined;
  const max = family === 6 ? 128 : 32;
  const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : Number.NaN;
  if (extra !== undefined || family === undefined || !(prefix >= 0 && prefix <= max)) {
    throw new IptablesFlagError(`--exclude-outbound-cidrs: expected CIDRs like 10.0.0.0/8, got "${text}"`);
  }
  return { family, text: `${address}/${prefix}` };
}
