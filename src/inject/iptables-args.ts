/*
 * The argv of `meshgate iptables` as the injector writes it for the init
 * container it adds to each pod. The command parses it with
 * parseIptablesFlags (src/interception/iptables-flags.ts), the only parser;
 * the injector's tests read the argv back through it. Flag names are a
 * contract: users see them in their pods and may run the command by hand.
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
 * lists rather than writing `--app-ports ''`. IPv6 CIDRs are written as
 * configured; the command ignores them with a warning (it captures IPv4 only).
 */

import { type InterceptionSpec, IPTABLES_FLAGS, type IptablesMode } from '../config/interception-spec.ts';

/** The argv after `meshgate iptables`, in a fixed order so injected pods are stable (golden files). */
export function buildIptablesArgs(settings: InterceptionSpec & { readonly mode?: IptablesMode }): string[] {
  const flag = (name: keyof typeof IPTABLES_FLAGS): string => `--${IPTABLES_FLAGS[name]}`;
  const args = [flag('inboundPort'), String(settings.inboundPort), flag('outboundPort'), String(settings.outboundPort), flag('proxyUid'), String(settings.proxyUid)];
  const list = (flag: string, values: readonly (number | string)[]): void => {
    if (values.length > 0) args.push(flag, values.join(','));
  };
  list(flag('appPorts'), settings.appPorts);
  list(flag('excludeInboundPorts'), settings.excludeInboundPorts);
  list(flag('excludeOutboundPorts'), settings.excludeOutboundPorts);
  list(flag('excludeOutboundCidrs'), settings.excludeOutboundCidrs);
  if (settings.mode === 'dry-run') args.push(flag('dryRun'));
  if (settings.mode === 'cleanup') args.push(flag('cleanup'));
  return args;
}
