import { BlockList, isIPv6 } from 'node:net';
import { canonicalPathPattern, pathPatternTest } from '../../policy/call-match.ts';
import type { AuthorizationRule } from '../../policy/kinds/authorization-policy.ts';
import type { PathKey } from '../../policy/path-trie.ts';
import { pathKey } from '../../policy/path-trie.ts';
import type { AuthzRequest } from './authz-request.ts';

/*
 * One AuthorizationPolicy rule compiled into predicates, plus the keys the
 * index (authz-index.ts) files it under. Semantics, as in Istio:
 *   - a rule matches when one of its `from` entries, one of its `to` entries
 *     and every `when` condition hold; an absent list holds;
 *   - inside one entry every field present must hold; a field holds when one
 *     of its values matches; a `not...` field holds when none matches;
 *   - a value the call does not have (no peer principal, no JWT, no such claim
 *     or header) matches no pattern, not even `*`: `principals: ["*"]` means
 *     "any mTLS peer", `requestPrincipals: ["*"]` "any verified JWT"; so the
 *     `not...` fields and `notValues` hold for it.
 */

export type AuthzAction = 'ALLOW' | 'DENY' | 'AUDIT';
export type AuthzMode = 'enforce' | 'shadow';

/** The name of a rule in decisions, logs and metrics. */
export interface RuleRef {
  /** `namespace/policy#rule`; `namespace/policy` for a whole ALLOW policy none of whose rules matched (shadow mode). */
  readonly id: string;
  /** `namespace/policy`. */
  readonly policy: string;
  /** The rule's name, or its index in the policy; '' for a whole policy. */
  readonly name: string;
}

type Test = (req: AuthzRequest) => boolean;

export interface CompiledOperation {
  /** Every field of the `to` entry (the index only narrows candidates). */
  readonly test: Test;
  /** Methods to file the operation under; undefined: any method. */
  readonly methods: readonly string[] | undefined;
  /** Paths to file it under; undefined: not indexable by path. */
  readonly pathKeys: readonly PathKey[] | undefined;
}

export interface CompiledRule extends RuleRef {
  /** Position across the snapshot (documents in order, rules in order): the lowest matching ordinal decides. */
  readonly ordinal: number;
  readonly action: AuthzAction;
  readonly mode: AuthzMode;
  /** One per `to` entry; undefined when the rule has no `to` (any operation). */
  readonly operations: readonly CompiledOperation[] | undefined;
  /** Exact peer principals one of which the call must have; undefined: not indexable by principal. */
  readonly principalKeys: readonly string[] | undefined;
  /** `from` (one entry) and `when` (all conditions). */
  readonly sourceAndConditions: Test;
}

const ALWAYS: Test = () => true;

/** `*`, `prefix*`, `*suffix` or exact (the single-`*` wildcard the schema allows). */
function wildcardMatcher(pattern: string): (value: string) => boolean {
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

/**
 * Peer principals may be written as Istio writes them, without the scheme
 * (`cluster.local/ns/shop/sa/frontend`): they are matched as `spiffe://...`.
 */
function canonicalPrincipal(pattern: string): string {
  if (pattern.startsWith('*') || pattern.startsWith('spiffe://')) return pattern;
  return `spiffe://${pattern}`;
}

function pathMatcher(pattern: string): Test {
  const test = pathPatternTest(pattern);
  return (req) => test(req.path);
}

function anyMatches(patterns: readonly string[], make: (p: string) => (v: string) => boolean): (value: string) => boolean {
  const tests = patterns.map(make);
  if (tests.length === 1) return tests[0]!;
  return (v) => {
    for (const t of tests) if (t(v)) return true;
    return false;
  };
}

function blockListOf(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [address, bits] = cidr.split('/') as [string, string | undefined];
    const type = isIPv6(address) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(bits), type);
  }
  return list;
}

function inBlocks(list: BlockList, req: AuthzRequest): boolean {
  if (req.address === '') return false;
  try {
    return list.check(req.address, req.family);
  } catch {
    return false;
  }
}

function all(tests: readonly Test[]): Test {
  if (tests.length === 0) return ALWAYS;
  if (tests.length === 1) return tests[0]!;
  return (req) => {
    for (const t of tests) if (!t(req)) return false;
    return true;
  };
}

function some(tests: readonly Test[]): Test {
  if (tests.length === 1) return tests[0]!;
  return (req) => {
    for (const t of tests) if (t(req)) return true;
    return false;
  };
}

/** `field` must match when given; `notField` must not. An absent value matches nothing. */
function valueTests(
  read: (req: AuthzRequest) => string | undefined,
  yes: readonly string[] | undefined,
  no: readonly string[] | undefined,
  make: (p: string) => (v: string) => boolean,
  out: Test[],
): void {
  if (yes && yes.length > 0) {
    const match = anyMatches(yes, make);
    out.push((req) => {
      const v = read(req);
      return v !== undefined && match(v);
    });
  }
  if (no && no.length > 0) {
    const match = anyMatches(no, make);
    out.push((req) => {
      const v = read(req);
      return v === undefined || !match(v);
    });
  }
}

type SourceSpec = NonNullable<AuthorizationRule['from']>[number];
type OperationSpec = NonNullable<AuthorizationRule['to']>[number];
type ConditionSpec = NonNullable<AuthorizationRule['when']>[number];

const principalMatcher = (p: string) => wildcardMatcher(canonicalPrincipal(p));

function compileSource(spec: SourceSpec): Test {
  const tests: Test[] = [];
  valueTests((r) => r.principal, spec.principals, spec.notPrincipals, principalMatcher, tests);
  valueTests((r) => r.namespace, spec.namespaces, spec.notNamespaces, wildcardMatcher, tests);
  if (spec.ipBlocks && spec.ipBlocks.length > 0) {
    const list = blockListOf(spec.ipBlocks);
    tests.push((req) => inBlocks(list, req));
  }
  if (spec.notIpBlocks && spec.notIpBlocks.length > 0) {
    const list = blockListOf(spec.notIpBlocks);
    tests.push((req) => !inBlocks(list, req));
  }
  valueTests((r) => r.requestPrincipal, spec.requestPrincipals, spec.notRequestPrincipals, wildcardMatcher, tests);
  return all(tests);
}

function compileOperation(spec: OperationSpec): CompiledOperation {
  const tests: Test[] = [];
  const methods = spec.methods && spec.methods.length > 0 ? [...new Set(spec.methods.map((m) => m.toUpperCase()))] : undefined;
  if (methods) {
    const set = new Set(methods);
    tests.push((req) => set.has(req.method));
  }
  if (spec.notMethods && spec.notMethods.length > 0) {
    const set = new Set(spec.notMethods.map((m) => m.toUpperCase()));
    tests.push((req) => !set.has(req.method));
  }
  let pathKeys: PathKey[] | undefined;
  if (spec.paths && spec.paths.length > 0) {
    const patterns = spec.paths.map(canonicalPathPattern);
    const matchers = patterns.map(pathMatcher);
    tests.push(some(matchers));
    const keys = patterns.map(pathKey);
    if (keys.every((k) => k !== undefined)) pathKeys = keys as PathKey[];
  }
  if (spec.notPaths && spec.notPaths.length > 0) {
    const matchers = spec.notPaths.map(canonicalPathPattern).map(pathMatcher);
    const any = some(matchers);
    tests.push((req) => !any(req));
  }
  if (spec.hosts && spec.hosts.length > 0) {
    // `example.com` also matches `example.com:8080`; `example.com:8080` only that port.
    const match = anyMatches(
      spec.hosts.map((h) => h.toLowerCase()),
      wildcardMatcher,
    );
    tests.push((req) => match(req.authority) || match(req.host));
  }
  if (spec.ports && spec.ports.length > 0) {
    const set = new Set(spec.ports);
    tests.push((req) => set.has(req.port));
  }
  if (spec.grpc) {
    const { service, method } = spec.grpc;
    tests.push((req) => req.grpc !== undefined && (service === undefined || service === '*' || req.grpc.service === service) && (method === undefined || method === '*' || req.grpc.method === method));
    // `/pkg.Service/Method` is an exact path, `/pkg.Service/` a prefix: the index can use them.
    if (!pathKeys && service !== undefined && service !== '*') {
      pathKeys = [method !== undefined && method !== '*' ? { exact: `/${service}/${method}` } : { prefix: `/${service}/` }];
    }
  }
  return { test: all(tests), methods, pathKeys };
}

function claimPath(key: string): string[] {
  return [...key.slice('request.auth.claims'.length).matchAll(/\[([^[\]]+)\]/g)].map((m) => m[1]!);
}

function claimValue(claims: Readonly<Record<string, unknown>> | undefined, path: readonly string[]): unknown {
  let value: unknown = claims;
  for (const name of path) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
    value = (value as Record<string, unknown>)[name];
  }
  return value;
}

/** Claims may be strings, numbers, booleans or lists of them; a list matches when one element does. */
function someScalar(value: unknown, match: (v: string) => boolean): boolean {
  if (typeof value === 'string') return match(value);
  if (typeof value === 'number' || typeof value === 'boolean') return match(String(value));
  if (Array.isArray(value)) {
    for (const item of value) if ((typeof item === 'string' || typeof item === 'number' || typeof item === 'boolean') && match(String(item))) return true;
  }
  return false;
}

function compileCondition(spec: ConditionSpec): Test {
  const key = spec.key;
  let holds: (req: AuthzRequest, match: (v: string) => boolean) => boolean;
  let make = wildcardMatcher;
  if (key === 'source.ip') {
    const yes = spec.values && spec.values.length > 0 ? blockListOf(spec.values) : undefined;
    const no = spec.notValues && spec.notValues.length > 0 ? blockListOf(spec.notValues) : undefined;
    return (req) => (!yes || inBlocks(yes, req)) && (!no || !inBlocks(no, req));
  } else if (key === 'source.namespace') {
    holds = (req, match) => req.namespace !== undefined && match(req.namespace);
  } else if (key === 'source.principal') {
    holds = (req, match) => req.principal !== undefined && match(req.principal);
    make = principalMatcher;
  } else if (key.startsWith('request.headers[')) {
    const name = key.slice('request.headers['.length, -1).toLowerCase();
    holds = (req, match) => someScalar(req.headers[name], match);
  } else {
    const path = claimPath(key);
    holds = (req, match) => someScalar(claimValue(req.claims, path), match);
  }
  const tests: Test[] = [];
  if (spec.values && spec.values.length > 0) {
    const match = anyMatches(spec.values, make);
    tests.push((req) => holds(req, match));
  }
  if (spec.notValues && spec.notValues.length > 0) {
    const match = anyMatches(spec.notValues, make);
    tests.push((req) => !holds(req, match));
  }
  return all(tests);
}

/** Exact principals when every `from` entry requires one of a list of them. */
function principalKeys(from: readonly SourceSpec[] | undefined): string[] | undefined {
  if (!from || from.length === 0) return undefined;
  const keys = new Set<string>();
  for (const entry of from) {
    if (!entry.principals || entry.principals.length === 0) return undefined;
    for (const p of entry.principals) {
      if (p.includes('*')) return undefined;
      keys.add(canonicalPrincipal(p));
    }
  }
  return [...keys];
}

export function compileRule(rule: AuthorizationRule, at: { policy: string; index: number; ordinal: number; action: AuthzAction; mode: AuthzMode }): CompiledRule {
  const name = rule.name ?? String(at.index);
  const from = rule.from && rule.from.length > 0 ? some(rule.from.map(compileSource)) : ALWAYS;
  const when = all((rule.when ?? []).map(compileCondition));
  return {
    id: `${at.policy}#${name}`,
    policy: at.policy,
    name,
    ordinal: at.ordinal,
    action: at.action,
    mode: at.mode,
    operations: rule.to && rule.to.length > 0 ? rule.to.map(compileOperation) : undefined,
    principalKeys: principalKeys(rule.from),
    sourceAndConditions: when === ALWAYS ? from : from === ALWAYS ? when : (req) => from(req) && when(req),
  };
}

/** The rule's full predicate, without the index: the reference the index must agree with. */
export function ruleMatches(rule: CompiledRule, req: AuthzRequest): boolean {
  if (rule.operations && !rule.operations.some((op) => op.test(req))) return false;
  return rule.sourceAndConditions(req);
}
