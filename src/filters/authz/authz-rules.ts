import { BlockList, isIPv6 } from 'node:net';
import type { CallContext } from '../../core/call-context.ts';
import { parseSpiffeId } from '../../identity/spiffe-id.ts';

/** One compiled condition set: every present field must hold. */
export type RuleTest = (call: CallContext) => boolean;

interface FromSpec {
  principals?: string[];
  notPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
  requestPrincipals?: string[];
  notRequestPrincipals?: string[];
}

interface ToSpec {
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
  hosts?: string[];
  ports?: number[];
  grpc?: unknown;
}

export interface RuleSpec {
  name?: string;
  from?: FromSpec[];
  to?: ToSpec[];
  when?: unknown[];
}

/** `*`, `prefix*`, `*suffix` or exact: the wildcard forms of principals and hosts. */
function wildcard(pattern: string): (value: string) => boolean {
  if (pattern === '*') return () => true;
  if (pattern.endsWith('*')) {
    const prefix = pattern.slice(0, -1);
    return (v) => v.startsWith(prefix);
  }
  if (pattern.startsWith('*')) {
    const suffix = pattern.slice(1);
    return (v) => v.endsWith(suffix);
  }
  return (v) => v === pattern;
}

/** Exact, `prefix*`, or a glob where `*` stands for one path segment (as in /orders/ * /items, without the spaces). */
function pathPattern(pattern: string): (path: string) => boolean {
  if (pattern.endsWith('*') && !pattern.slice(0, -1).includes('*')) {
    const prefix = pattern.slice(0, -1);
    return (p) => p.startsWith(prefix);
  }
  if (!pattern.includes('*')) return (p) => p === pattern;
  const source = pattern
    .split('*')
    .map((part) => part.replace(/[.+?^$(){}|\[\]\\]/g, '\\$&'))
    .join('[^/]*');
  const re = new RegExp(`^${source}$`);
  return (p) => re.test(p);
}

function anyOf<T>(patterns: readonly string[] | undefined, make: (p: string) => (v: T) => boolean): ((v: T) => boolean) | undefined {
  if (!patterns || patterns.length === 0) return undefined;
  const tests = patterns.map(make);
  return (v) => tests.some((t) => t(v));
}

function blockList(cidrs: readonly string[] | undefined): BlockList | undefined {
  if (!cidrs || cidrs.length === 0) return undefined;
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [address, bits] = cidr.split('/') as [string, string | undefined];
    const type = isIPv6(address) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(bits), type);
  }
  return list;
}

function ipOf(call: CallContext): { address: string; type: 'ipv4' | 'ipv6' } {
  const raw = call.source.address.startsWith('::ffff:') ? call.source.address.slice(7) : call.source.address;
  return { address: raw, type: isIPv6(raw) ? 'ipv6' : 'ipv4' };
}

function compileFrom(spec: FromSpec): RuleTest {
  const principal = anyOf<string>(spec.principals, wildcard);
  const notPrincipal = anyOf<string>(spec.notPrincipals, wildcard);
  const namespace = anyOf<string>(spec.namespaces, wildcard);
  const notNamespace = anyOf<string>(spec.notNamespaces, wildcard);
  const blocks = blockList(spec.ipBlocks);
  const notBlocks = blockList(spec.notIpBlocks);
  // JWT request principals arrive with the authentication filter; until then such a
  // condition cannot hold, so an ALLOW rule using it admits no one.
  const needsJwt = (spec.requestPrincipals?.length ?? 0) > 0;
  return (call) => {
    if (needsJwt) return false;
    const id = call.source.principal;
    if (principal && (!id || !principal(id))) return false;
    if (notPrincipal && id && notPrincipal(id)) return false;
    const ns = id ? parseSpiffeId(id)?.namespace : undefined;
    if (namespace && (!ns || !namespace(ns))) return false;
    if (notNamespace && ns && notNamespace(ns)) return false;
    if (blocks || notBlocks) {
      const ip = ipOf(call);
      if (blocks && !blocks.check(ip.address, ip.type)) return false;
      if (notBlocks && notBlocks.check(ip.address, ip.type)) return false;
    }
    return true;
  };
}

function compileTo(spec: ToSpec): RuleTest {
  const methods = spec.methods ? new Set(spec.methods.map((m) => m.toUpperCase())) : undefined;
  const notMethods = spec.notMethods ? new Set(spec.notMethods.map((m) => m.toUpperCase())) : undefined;
  const path = anyOf<string>(spec.paths, pathPattern);
  const notPath = anyOf<string>(spec.notPaths, pathPattern);
  const host = anyOf<string>(spec.hosts, wildcard);
  const ports = spec.ports ? new Set(spec.ports) : undefined;
  const needsGrpc = spec.grpc !== undefined;
  return (call) => {
    if (needsGrpc) return false;
    if (methods && !methods.has(call.method)) return false;
    if (notMethods && notMethods.has(call.method)) return false;
    if (path && !path(call.path)) return false;
    if (notPath && notPath(call.path)) return false;
    if (host && !host(call.authority.toLowerCase())) return false;
    if (ports) {
      const port = Number(/:(\d+)$/.exec(call.authority)?.[1] ?? 80);
      if (!ports.has(port)) return false;
    }
    return true;
  };
}

/**
 * A rule matches when one of its `from` entries, one of its `to` entries and
 * all of its `when` conditions hold (absent lists hold). Conditions this build
 * cannot evaluate yet (JWT principals, gRPC method, `when`) never hold, so an
 * ALLOW rule that uses them admits no one; DENY rules treat them the other way
 * (see compileRule's `failSafe`).
 */
export function compileRule(rule: RuleSpec, failSafe: 'never-match' | 'always-match'): RuleTest {
  const froms = rule.from?.map(compileFrom);
  const tos = rule.to?.map(compileTo);
  const unsupported = (rule.when?.length ?? 0) > 0 || rule.from?.some((f) => (f.requestPrincipals?.length ?? 0) > 0 || (f.notRequestPrincipals?.length ?? 0) > 0) || rule.to?.some((t) => t.grpc !== undefined);
  if (unsupported) return () => failSafe === 'always-match';
  return (call) => (!froms || froms.some((t) => t(call))) && (!tos || tos.some((t) => t(call)));
}
