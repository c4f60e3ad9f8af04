import { parseArgs } from 'node:util';
import { isIPv4, isIPv6 } from 'node:net';
import type { InterceptionSpec } from '../interception/iptables-rules.ts';

/*
 * `meshgate iptables`: the pod's redirect rules (the init container of an
 * injected pod runs it). A usage problem is one line on stderr and exit 2;
 * iptables refusing is one line and exit 1.
 */

export const IPTABLES_HELP = `Usage: meshgate iptables [options] [--dry-run | --cleanup]

Installs the redirect rules of a pod (as root or with NET_ADMIN, in the pod's
network namespace): inbound TCP to the pod goes to the sidecar's inbound
listener, outbound TCP from every uid but the sidecar's goes to its outbound
listener. Own chains in the nat table (MESHGATE_INBOUND, MESHGATE_IN_REDIRECT,
MESHGATE_OUTPUT, MESHGATE_REDIRECT): running it again replaces their rules,
--cleanup removes them. IPv4 only.

Never captured: the sidecar's ports (inbound, outbound, 15000 admin, 15443
edge), connections of --proxy-uid, loopback, and what is excluded below.

Options:
  --inbound-port N              inbound listener (default 15006)
  --outbound-port N             outbound listener (default 15001)
  --proxy-uid N                 uid the sidecar runs as (default 1337)
  --app-ports N,..              ports the app serves (checked: never excluded)
  --exclude-inbound-ports N,..  inbound ports left alone (e.g. kubelet probe ports)
  --exclude-outbound-ports N,.. outbound destination ports left alone
  --exclude-outbound-cidrs C,.. outbound destinations left alone (a.b.c.d/n; IPv6 ones are
                                accepted and ignored, as IPv6 is not captured)
  --dry-run                     print the iptables-restore input, change nothing
  --cleanup                     remove the rules and chains`;

type Out = { stdout: (text: string) => void; stderr: (text: string) => void };

const defaultOut: Out = { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t) };

class FlagError extends Error {}

export async function runIptables(args: string[], out: Out = defaultOut): Promise<number> {
  let spec: InterceptionSpec;
  let mode: 'apply' | 'dry-run' | 'cleanup';
  let ignoredV6: string[];
  try {
    ({ spec, mode, ignoredV6 } = parseFlags(args));
  } catch (err) {
    const message = err instanceof FlagError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? (err as Error).message.split('\n')[0] : undefined;
    if (message === undefined) throw err;
    out.stderr(`meshgate iptables: ${message}\n`);
    return 2;
  }
  const { buildRules, restoreText, specProblems } = await import('../interception/iptables-rules.ts');
  const problems = specProblems(spec);
  if (problems.length > 0) {
    out.stderr(`meshgate iptables: ${problems[0]}\n`);
    return 2;
  }
  const rules = buildRules(spec);
  // A dual-stack cluster's injector may list IPv6 ranges too; IPv6 is not captured, so there is nothing to exclude.
  if (ignoredV6.length > 0) out.stderr(`meshgate iptables: warning: IPv6 CIDRs ignored (the rules capture IPv4 only): ${ignoredV6.join(',')}\n`);
  if (mode === 'dry-run') {
    out.stdout(restoreText(rules));
    return 0;
  }
  const { applyRules, cleanupRules, hasGlobalIpv6, IptablesError } = await import('../interception/iptables-apply.ts');
  try {
    if (mode === 'cleanup') {
      const { removed } = await cleanupRules(rules);
      out.stdout(`meshgate iptables: cleaned up (${removed} rules and chains removed)\n`);
      return 0;
    }
    await applyRules(rules);
  } catch (err) {
    if (!(err instanceof IptablesError)) throw err;
    out.stderr(`meshgate iptables: ${err.message}\n`);
    return 1;
  }
  out.stdout(`meshgate iptables: ${rules.rules.length} rules installed (inbound -> :${spec.inboundPort}, outbound -> :${spec.outboundPort}, uid ${spec.proxyUid} not captured)\n`);
  if (await hasGlobalIpv6()) out.stderr('meshgate iptables: warning: this pod has a global IPv6 address; the rules capture IPv4 only, IPv6 connections pass uncaptured\n');
  return 0;
}

function parseFlags(args: string[]): { spec: InterceptionSpec; mode: 'apply' | 'dry-run' | 'cleanup'; ignoredV6: string[] } {
  const { values, positionals } = parseArgs({
    args,
    options: {
      'inbound-port': { type: 'string', default: '15006' },
      'outbound-port': { type: 'string', default: '15001' },
      'proxy-uid': { type: 'string', default: '1337' },
      'app-ports': { type: 'string', default: '' },
      'exclude-inbound-ports': { type: 'string', default: '' },
      'exclude-outbound-ports': { type: 'string', default: '' },
      'exclude-outbound-cidrs': { type: 'string', default: '' },
      'dry-run': { type: 'boolean', default: false },
      cleanup: { type: 'boolean', default: false },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 0) throw new FlagError(`unexpected argument "${positionals[0]}"`);
  if (values['dry-run'] && values.cleanup) throw new FlagError('--dry-run and --cleanup exclude each other');
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
  if (!(n >= 1 && n <= 65535)) throw new FlagError(`--${flag}: expected a port from 1 to 65535, got "${text}"`);
  return n;
}

function uid(text: string): number {
  const n = /^\d{1,10}$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 0 && n < 2 ** 32 - 1)) throw new FlagError(`--proxy-uid: expected a numeric uid, got "${text}"`);
  return n;
}

function cidr(text: string): { family: 4 | 6; text: string } {
  const [address = '', bits, extra] = text.split('/');
  const family = isIPv4(address) ? 4 : isIPv6(address) ? 6 : undefined;
  const max = family === 6 ? 128 : 32;
  const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : Number.NaN;
  if (extra !== undefined || family === undefined || !(prefix >= 0 && prefix <= max)) {
    throw new FlagError(`--exclude-outbound-cidrs: expected CIDRs like 10.0.0.0/8, got "${text}"`);
  }
  return { family, text: `${address}/${prefix}` };
}
