import type { InterceptionSpec } from '../config/interception-spec.ts';
import { IptablesFlagError, parseIptablesFlags } from '../interception/iptables-flags.ts';

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

export async function runIptables(args: string[], out: Out = defaultOut): Promise<number> {
  let spec: InterceptionSpec;
  let mode: 'apply' | 'dry-run' | 'cleanup';
  let ignoredV6: string[];
  try {
    ({ spec, mode, ignoredV6 } = parseIptablesFlags(args));
  } catch (err) {
    const message = err instanceof IptablesFlagError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? (err as Error).message.split('\n')[0] : undefined;
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
