/*
 * What `meshgate iptables` captures, as one value: the command parses its
 * flags into it (src/interception/iptables-flags.ts) and the injector writes
 * the init container's flags from it (src/inject/iptables-args.ts). Both sit
 * on the same floor, so the shape and the flag names live here, below them.
 * Flag names are a contract: users see them in their pods and may run the
 * command by hand.
 */

export interface InterceptionSpec {
  readonly inboundPort: number;
  readonly outboundPort: number;
  readonly proxyUid: number;
  /** Ports the app serves; mesh calls to them are captured and reach the app through the sidecar. */
  readonly appPorts: readonly number[];
  /** Inbound ports left alone (e.g. the ports kubelet probes). */
  readonly excludeInboundPorts: readonly number[];
  /** Outbound destination ports left alone (e.g. a database the app reaches directly). */
  readonly excludeOutboundPorts: readonly number[];
  /** Outbound destinations left alone, IPv4 CIDRs (a.b.c.d/n). */
  readonly excludeOutboundCidrs: readonly string[];
}

export type IptablesMode = 'apply' | 'dry-run' | 'cleanup';

/** Each field's flag (without the leading `--`), and the two mode flags. */
export const IPTABLES_FLAGS = {
  inboundPort: 'inbound-port',
  outboundPort: 'outbound-port',
  proxyUid: 'proxy-uid',
  appPorts: 'app-ports',
  excludeInboundPorts: 'exclude-inbound-ports',
  excludeOutboundPorts: 'exclude-outbound-ports',
  excludeOutboundCidrs: 'exclude-outbound-cidrs',
  dryRun: 'dry-run',
  cleanup: 'cleanup',
} as const;

/** The sidecar's contract ports and uid (ARCHITECTURE.md), used when a flag is absent. */
export const IPTABLES_DEFAULTS = { inboundPort: 15006, outboundPort: 15001, proxyUid: 1337 } as const;
