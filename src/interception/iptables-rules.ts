/*
 * The redirect rules of one pod, as data: a pure function of the flags, so a
 * golden test pins exactly what `meshgate iptables` installs and `--dry-run`
 * prints. Applying them is iptables-apply.ts.
 *
 * The layout follows Istio's (operators already know how to read it): our own
 * chains in the nat table, entered by one jump each from PREROUTING and OUTPUT.
 * Re-running flushes and refills our chains (idempotent); cleanup removes the
 * jumps and the chains and leaves every other rule alone.
 *
 * IPv4 only: the outbound listener binds one address (127.0.0.1, where REDIRECT
 * sends locally made IPv4 connections), and IPv6 capture would need a second
 * one on ::1. iptables-apply.ts says so when the pod has a global IPv6 address.
 */

import type { InterceptionSpec } from '../config/interception-spec.ts';

const CHAINS = {
  inbound: 'MESHGATE_INBOUND',
  inboundRedirect: 'MESHGATE_IN_REDIRECT',
  output: 'MESHGATE_OUTPUT',
  redirect: 'MESHGATE_REDIRECT',
} as const;

/** The contract's admin and edge ports (ARCHITECTURE.md): the sidecar's own, never captured inbound. */
const SIDECAR_FIXED_PORTS: readonly number[] = [15000, 15443];

/** A rule: the chain it is appended to and the iptables arguments after `-A CHAIN`. */
export interface Rule {
  readonly chain: string;
  readonly args: readonly string[];
}

export interface RuleSet {
  /** Our chains, created (or flushed when they exist) before the rules go in. */
  readonly chains: readonly string[];
  /** The rules of our chains, in order. */
  readonly rules: readonly Rule[];
  /** The jumps into our chains from the built-in ones; added only when missing, so re-runs do not stack them. */
  readonly jumps: readonly Rule[];
}

/**
 * The rules for one pod.
 *
 * Inbound (PREROUTING): every TCP connection to the pod goes to the inbound
 * listener, except to the sidecar's own ports and the excluded ones. Capturing
 * every port, not only the app ports, fails closed: a port nobody declared
 * reaches the sidecar, which refuses it with a reason, instead of a listener in
 * the pod that mTLS and policy never see.
 *
 * Outbound (OUTPUT): every TCP connection the pod makes goes to the outbound
 * listener, except the sidecar's own (its uid: otherwise its mTLS calls would
 * come back to it), loopback, the excluded ports and CIDRs.
 */
export function buildRules(spec: InterceptionSpec): RuleSet {
  const tcp = ['-p', 'tcp'];
  const ownPorts = unique([spec.inboundPort, spec.outboundPort, ...SIDECAR_FIXED_PORTS]);
  const rules: Rule[] = [
    { chain: CHAINS.inboundRedirect, args: [...tcp, '-j', 'REDIRECT', '--to-ports', String(spec.inboundPort)] },
    { chain: CHAINS.redirect, args: [...tcp, '-j', 'REDIRECT', '--to-ports', String(spec.outboundPort)] },
  ];
  for (const port of unique([...ownPorts, ...spec.excludeInboundPorts])) {
    rules.push({ chain: CHAINS.inbound, args: [...tcp, '--dport', String(port), '-j', 'RETURN'] });
  }
  rules.push({ chain: CHAINS.inbound, args: [...tcp, '-j', CHAINS.inboundRedirect] });

  // The sidecar's own connections first: they are never captured, whatever else matches.
  rules.push({ chain: CHAINS.output, args: ['-m', 'owner', '--uid-owner', String(spec.proxyUid), '-j', 'RETURN'] });
  // Loopback: calls inside the pod (including to its own pod IP, which routes over lo) are the pod's business.
  rules.push({ chain: CHAINS.output, args: ['-o', 'lo', '-j', 'RETURN'] });
  for (const port of unique(spec.excludeOutboundPorts)) {
    rules.push({ chain: CHAINS.output, args: [...tcp, '--dport', String(port), '-j', 'RETURN'] });
  }
  for (const cidr of unique(spec.excludeOutboundCidrs)) {
    rules.push({ chain: CHAINS.output, args: ['-d', cidr, '-j', 'RETURN'] });
  }
  rules.push({ chain: CHAINS.output, args: ['-j', CHAINS.redirect] });

  return {
    chains: [CHAINS.inbound, CHAINS.inboundRedirect, CHAINS.output, CHAINS.redirect],
    rules,
    jumps: [
      { chain: 'PREROUTING', args: [...tcp, '-j', CHAINS.inbound] },
      { chain: 'OUTPUT', args: [...tcp, '-j', CHAINS.output] },
    ],
  };
}

/**
 * iptables-restore input for `--noflush`: declaring a chain creates it, or
 * flushes it when it exists, so the new rules replace the old ones in one
 * transaction; `jumps` are the ones still missing.
 */
export function restoreText(set: RuleSet, jumps: readonly Rule[] = set.jumps): string {
  const lines = ['*nat', ...set.chains.map((chain) => `:${chain} - [0:0]`)];
  for (const rule of [...set.rules, ...jumps]) lines.push(`-A ${rule.chain} ${rule.args.join(' ')}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * What the user gave: the problems that would make the rules wrong, as one
 * line each (empty when the spec is sound).
 */
export function specProblems(spec: InterceptionSpec): string[] {
  const problems: string[] = [];
  if (spec.inboundPort === spec.outboundPort) problems.push(`--inbound-port and --outbound-port are both ${spec.inboundPort}`);
  const excluded = new Set(spec.excludeInboundPorts);
  for (const port of spec.appPorts) {
    // A peer sidecar dials pod-ip:app-port with mTLS: uncaptured, the app would get TLS bytes it cannot read.
    if (excluded.has(port)) problems.push(`--exclude-inbound-ports: ${port} is also an app port; mesh calls to it would reach the app still encrypted (serve probes on another port)`);
    if (port === spec.inboundPort || port === spec.outboundPort || SIDECAR_FIXED_PORTS.includes(port)) problems.push(`--app-ports: ${port} is a port of the sidecar`);
  }
  return problems;
}

function unique<T>(values: readonly T[]): T[] {
  return [...new Set(values)];
}
