import type { IncomingHttpHeaders } from 'node:http';
import type { CallContext } from '../../core/call-context.ts';
import { pathForMatching } from '../../core/path-normalize.ts';
import { parseSpiffeId } from '../../core/spiffe-id.ts';

/**
 * What AuthorizationPolicy rules read about one call, derived once per call so
 * no rule repeats the work (parsing the SPIFFE ID, the port, the gRPC method).
 * Plain data: the offline tools build one without a live call.
 */
export interface AuthzRequest {
  /** Upper-case HTTP method (POST for gRPC). */
  readonly method: string;
  /** The normalized path without `;` parameters (src/core/path-normalize.ts). */
  readonly path: string;
  /** Lower-cased authority as sent, with its port if any. */
  readonly authority: string;
  /** `authority` without the port. */
  readonly host: string;
  /** Port of the authority; 80 when it has none. */
  readonly port: number;
  /** Verified SPIFFE ID of the peer (mTLS), if any. */
  readonly principal: string | undefined;
  /** Namespace of `principal`, if it is a meshgate SPIFFE ID. */
  readonly namespace: string | undefined;
  /** Source address of the connection, IPv4-mapped IPv6 unwrapped. */
  readonly address: string;
  readonly family: 'ipv4' | 'ipv6';
  /** Verified JWT `iss/sub`, set by the authn filter. */
  readonly requestPrincipal: string | undefined;
  /** Verified JWT claims, set by the authn filter. */
  readonly claims: Readonly<Record<string, unknown>> | undefined;
  readonly headers: IncomingHttpHeaders;
  /** `package.Service` and `Method` of a gRPC call's path `/package.Service/Method`. */
  readonly grpc: { readonly service: string; readonly method: string } | undefined;
}

const DEFAULT_PORT = 80;

function splitAuthority(authority: string): { host: string; port: number } {
  const match = /^(.*):(\d{1,5})$/.exec(authority);
  // `[::1]` alone ends with `]`, not digits; `::1` (no brackets) is not a valid authority.
  if (!match || (match[1]!.includes(':') && !match[1]!.endsWith(']'))) return { host: authority, port: DEFAULT_PORT };
  return { host: match[1]!, port: Number(match[2]) };
}

function grpcTarget(path: string): AuthzRequest['grpc'] {
  const slash = path.indexOf('/', 1);
  if (slash < 0 || path.indexOf('/', slash + 1) >= 0) return undefined;
  const service = path.slice(1, slash);
  const method = path.slice(slash + 1);
  return service && method ? { service, method } : undefined;
}

export function authzRequestOf(call: CallContext): AuthzRequest {
  const authority = call.authority.toLowerCase();
  const { host, port } = splitAuthority(authority);
  const principal = call.source.principal;
  const address = call.source.address.startsWith('::ffff:') ? call.source.address.slice(7) : call.source.address;
  const path = pathForMatching(call.path);
  const auth = call.annotations.auth;
  // Read only by rules that name namespaces: parsing the SPIFFE ID (four regular expressions) on every
  // call was ~2.7 µs of the bench:mesh orders sidecar's CPU per call in context (--cpu-prof).
  let namespace: string | undefined | null = null;
  return {
    method: call.method,
    path,
    authority,
    host,
    port,
    principal,
    get namespace() {
      if (namespace === null) namespace = principal ? parseSpiffeId(principal)?.namespace : undefined;
      return namespace;
    },
    address,
    // The socket's peer or a forwarded address client-address.ts checked: an IP or ''. Only IPv6 has a colon;
    // node's isIPv6 runs a long regular expression, on every call (0.6% of a mesh sidecar's CPU).
    family: address.includes(':') ? 'ipv6' : 'ipv4',
    requestPrincipal: auth?.principal,
    claims: auth?.claims,
    headers: call.headers,
    grpc: call.isGrpc ? grpcTarget(path) : undefined,
  };
}
