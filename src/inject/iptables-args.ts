import { isCidr } from '../config/injector-schema.ts';

/*
 * The argv of `meshgate iptables`: the one place both sides agree on it. The
 * injector builds it for the init container it adds to each pod
 * (buildIptablesArgs); the `meshgate iptables` command parses it
 * (parseIptablesArgs). Flag names are a contract: users see them in their
 * pods and may run the command by hand.
 *
 *   meshgate iptables --inbound-port 15006 --outbound-port 15001 --proxy-uid 1337
 *     [--app-ports P,..] [--exclude-inbound-ports P,..] [--exclude-outbound-ports P,..]
 *     [--exclude-outbound-cidrs CIDR,..] [--dry-run | --cleanup]
 *
 * What each flag means for the redirect rules:
 * - inbound TCP to the pod is redirected to --inbound-port (the sidecar's
 *   inbound listener), except the sidecar's own ports and ports in
 *   --exclude-inbound-ports (probe and metrics ports); the sidecar passes a
 *   captured connection to the app only on one of --app-ports and refuses
 *   the rest (src/interception/iptables-rules.ts);
 * - outbound TCP from the pod is redirected to --outbound-port, except
 *   traffic of --proxy-uid (the sidecar itself), to loopback, to a port in
 *   --exclude-outbound-ports, or to an address in --exclude-outbound-cidrs;
 * - --dry-run prints the rules without applying them; --cleanup removes them.
 * A list flag that is absent means an empty list; the injector omits empty
 * lists rather than writing `--app-ports ''`.
 */

export const IPTABLES_FLAGS = {
  inboundPort: '--inbound-port',
  outboundPort: '--outbound-port',
  proxyUid: '--proxy-uid',
  appPorts: '--app-ports',
  excludeInboundPorts: '--exclude-inbound-ports',
  excludeOutboundPorts: '--exclude-outbound-ports',
  excludeOutboundCidrs: '--exclude-outbound-cidrs',
  dryRun: '--dry-run',
  cleanup: '--cleanup',
} as const;

export interface IptablesSettings {
  readonly inboundPort: number;
  readonly outboundPort: number;
  readonly proxyUid: number;
  readonly appPorts: readonly number[];
  readonly excludeInboundPorts: readonly number[];
  readonly excludeOutboundPorts: readonly number[];
  readonly excludeOutboundCidrs: readonly string[];
  readonly mode: 'apply' | 'dry-run' | 'cleanup';
}

export const IPTABLES_DEFAULTS = { inboundPort: 15006, outboundPort: 15001, proxyUid: 1337 } as const;

/** The argv after `meshgate iptables`, in a fixed order so injected pods are stable (golden files). */
export function buildIptablesArgs(settings: Omit<IptablesSettings, 'mode'> & { readonly mode?: IptablesSettings['mode'] }): string[] {
  const args = [
    IPTABLES_FLAGS.inboundPort,
    String(settings.inboundPort),
    IPTABLES_FLAGS.outboundPort,
    String(settings.outboundPort),
    IPTABLES_FLAGS.proxyUid,
    String(settings.proxyUid),
  ];
  const list = (flag: string, values: readonly (number | string)[]): void => {
    if (values.length > 0) args.push(flag, values.join(','));
  };
  list(IPTABLES_FLAGS.appPorts, settings.appPorts);
  list(IPTABLES_FLAGS.excludeInboundPorts, settings.excludeInboundPorts);
  list(IPTABLES_FLAGS.excludeOutboundPorts, settings.excludeOutboundPorts);
  list(IPTABLES_FLAGS.excludeOutboundCidrs, settings.excludeOutboundCidrs);
  if (settings.mode === 'dry-run') args.push(IPTABLES_FLAGS.dryRun);
  if (settings.mode === 'cleanup') args.push(IPTABLES_FLAGS.cleanup);
  return args;
}

/** A bad flag or value, worded as the one line the CLI prints. */
export class IptablesArgsError extends Error {
  override readonly name = 'IptablesArgsError';
}

/**
 * Parses the argv built above (flags as `--flag value` or `--flag=value`).
 * Throws IptablesArgsError naming the flag and the bad value.
 */
export function parseIptablesArgs(argv: readonly string[]): IptablesSettings {
  const values = new Map<string, string>();
  let mode: IptablesSettings['mode'] = 'apply';
  const valued = new Set<string>([
    IPTABLES_FLAGS.inboundPort,
    IPTABLES_FLAGS.outboundPort,
    IPTABLES_FLAGS.proxyUid,
    IPTABLES_FLAGS.appPorts,
    IPTABLES_FLAGS.excludeInboundPorts,
    IPTABLES_FLAGS.excludeOutboundPorts,
    IPTABLES_FLAGS.excludeOutboundCidrs,
  ]);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    if (flag === IPTABLES_FLAGS.dryRun || flag === IPTABLES_FLAGS.cleanup) {
      const next = flag === IPTABLES_FLAGS.dryRun ? 'dry-run' : 'cleanup';
      if (mode !== 'apply' && mode !== next) throw new IptablesArgsError(`${IPTABLES_FLAGS.dryRun} and ${IPTABLES_FLAGS.cleanup} exclude each other`);
      mode = next;
      continue;
    }
    if (!valued.has(flag)) throw new IptablesArgsError(`unknown option ${JSON.stringify(flag)}`);
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new IptablesArgsError(`${flag}: missing value`);
    if (values.has(flag)) throw new IptablesArgsError(`${flag}: given twice`);
    values.set(flag, value);
  }
  const port = (flag: string, fallback: number): number => {
    const text = values.get(flag);
    return text === undefined ? fallback : parsePort(flag, text);
  };
  const ports = (flag: string): number[] => splitList(values.get(flag)).map((text) => parsePort(flag, text));
  const cidrs = splitList(values.get(IPTABLES_FLAGS.excludeOutboundCidrs));
  for (const cidr of cidrs) {
    if (!isCidr(cidr)) throw new IptablesArgsError(`${IPTABLES_FLAGS.excludeOutboundCidrs}: expected CIDRs like 10.0.0.0/8 or fd00::/8, got "${cidr}"`);
  }
  const uidText = values.get(IPTABLES_FLAGS.proxyUid);
  const proxyUid = uidText === undefined ? IPTABLES_DEFAULTS.proxyUid : Number(uidText);
  if (!/^\d{1,10}$/.test(uidText ?? '0') || proxyUid > 0xffff_fffe) throw new IptablesArgsError(`${IPTABLES_FLAGS.proxyUid}: expected a numeric uid, got "${uidText}"`);
  return {
    inboundPort: port(IPTABLES_FLAGS.inboundPort, IPTABLES_DEFAULTS.inboundPort),
    outboundPort: port(IPTABLES_FLAGS.outboundPort, IPTABLES_DEFAULTS.outboundPort),
    proxyUid,
    appPorts: ports(IPTABLES_FLAGS.appPorts),
    excludeInboundPorts: ports(IPTABLES_FLAGS.excludeInboundPorts),
    excludeOutboundPorts: ports(IPTABLES_FLAGS.excludeOutboundPorts),
    excludeOutboundCidrs: cidrs,
    mode,
  };
}

function splitList(text: string | undefined): string[] {
  if (text === undefined) return [];
  return text
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '');
}

function parsePort(flag: string, text: string): number {
  const port = Number(text);
  if (!/^\d{1,5}$/.test(text) || port < 1 || port > 65535) throw new IptablesArgsError(`${flag}: expected ports 1-65535, got "${text}"`);
  return port;
}
