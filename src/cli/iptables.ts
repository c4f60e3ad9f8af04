import type { InterceptionSpec } from '../config/interception-spec.ts';
import { IptablesFlagError, parseIptablesFlags } from '../interception/iptables-flags.ts';

/*
 * `meshgate iptables`: the pod's redirect rules (the init container of an
 * injected pod runs it). A usage problem is one line on stderr and exit 2;
 * iptables refusing is one line and exit 1.
 */

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
