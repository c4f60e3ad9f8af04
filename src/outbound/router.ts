import type { IncomingHttpHeaders } from 'node:http';
import type { HeaderMatchConfig, HeaderMutationConfig, RetryConfig, RouteConfig, StringMatchConfig } from '../config/sidecar-schema.ts';

export interface RouteBackend {
  readonly service: string;
  readonly namespace: string;
  readonly subset: Readonly<Record<string, string>> | undefined;
  readonly weight: number;
}

export interface CompiledRoute {
  readonly name: string;
  readonly timeoutMs: number;
  readonly retries: RetryConfig | undefined;
  readonly backends: readonly RouteBackend[];
  readonly requestHeaders: HeaderMutationConfig;
  readonly responseHeaders: HeaderMutationConfig;
  matches(method: string, path: string, query: string, headers: IncomingHttpHeaders): boolean;
}

type ValueTest = (value: string | undefined) => boolean;

function compileString(match: StringMatchConfig): (value: string) => boolean {
  if (match.exact !== undefined) {
    const exact = match.exact;
    return (value) => value === exact;
  }
  if (match.prefix !== undefined) {
    const prefix = match.prefix;
    return (value) => value.startsWith(prefix);
  }
  const pattern = new RegExp(`^(?:${match.regex!})$`);
  return (value) => pattern.test(value);
}

function compileValue(match: HeaderMatchConfig): ValueTest {
  if (match.present !== undefined) {
    const wanted = match.present;
    return (value) => (value !== undefined) === wanted;
  }
  if (match.exact === undefined && match.prefix === undefined && match.regex === undefined) {
    return (value) => value !== undefined;
  }
  const test = compileString(match as StringMatchConfig);
  return (value) => value !== undefined && test(value);
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/**
 * Compiles a service's routes once per configuration: regexes built, names
 * lower-cased, so matching a call does no parsing beyond the query string,
 * and that only when a route asks for query parameters.
 */
export function compileRoute(config: RouteConfig, index: number, owner: { name: string; namespace: string }): CompiledRoute {
  const pathTest = config.match.path ? compileString(config.match.path) : undefined;
  const methods = config.match.methods ? new Set(config.match.methods) : undefined;
  const headerTests = config.match.headers.map((m) => ({ name: m.name.toLowerCase(), test: compileValue(m) }));
  const queryTests = config.match.query.map((m) => ({ name: m.name, test: compileValue(m) }));
  const backends: RouteBackend[] = (config.backends ?? [{ weight: 1 }]).map((b) => {
    const [service, namespace] = b.service ? splitService(b.service, owner.namespace) : [owner.name, owner.namespace];
    return { service, namespace, subset: b.subset, weight: b.weight };
  });
  return {
    name: config.name ?? `${owner.name}#${index}`,
    timeoutMs: config.timeout,
    retries: config.retries,
    backends,
    requestHeaders: config.requestHeaders,
    responseHeaders: config.responseHeaders,
    matches(method, path, query, headers) {
      if (methods && !methods.has(method)) return false;
      if (pathTest && !pathTest(path)) return false;
      for (const { name, test } of headerTests) if (!test(headerValue(headers, name))) return false;
      if (queryTests.length > 0) {
        const params = new URLSearchParams(query);
        for (const { name, test } of queryTests) if (!test(params.get(name) ?? undefined)) return false;
      }
      return true;
    },
  };
}

function splitService(ref: string, defaultNamespace: string): [string, string] {
  const dot = ref.indexOf('.');
  return dot < 0 ? [ref, defaultNamespace] : [ref.slice(0, dot), ref.slice(dot + 1)];
}

/** The route used when a service lists none: everything, to every endpoint. */
export function defaultRoute(owner: { name: string; namespace: string }): RouteConfig {
  return {
    name: `${owner.name}#default`,
    match: { headers: [], query: [] },
    timeout: 15_000,
    retries: undefined,
    requestHeaders: { set: {}, add: {}, remove: [] },
    responseHeaders: { set: {}, add: {}, remove: [] },
  };
}

/** Picks a backend by weight; `random` in [0,1). */
export function pickBackend(backends: readonly RouteBackend[], random: number): RouteBackend | undefined {
  if (backends.length === 1) return backends[0];
  let total = 0;
  for (const b of backends) total += b.weight;
  if (total === 0) return undefined;
  let point = random * total;
  for (const b of backends) {
    point -= b.weight;
    if (point < 0) return b;
  }
  return backends[backends.length - 1];
}
