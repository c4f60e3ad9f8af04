import type { IncomingHttpHeaders } from 'node:http';
import type { CallContext } from '../../core/call-context.ts';
import { pathForMatching } from '../../core/path-normalize.ts';
import { parseSpiffeId } from '../../core/spiffe-id.ts';

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
  return new AuthzRequest(call);
}

/**
 * What AuthorizationPolicy rules read about one call, derived once per call so
 * no rule repeats the work (the port, the gRPC method); the offline tools make
 * one from a call they build (authzRequestOf). A class, not an object literal:
 * `namespace` is read only by rules that name namespaces, so it is a getter
 * that parses the SPIFFE ID (four regular expressions, ~250 ns in a loop, ~2.4
 * µs per call of the bench:mesh orders sidecar in context) on first read, and
 * a getter in an object literal makes V8 build each object through its slow
 * path (670-940 ns per object in a loop, scratch-tmp/getter.mjs; 4-10 ns with
 * the getter on a class prototype).
 */
export class AuthzRequest {
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
  #namespace: string | undefined | null = null;

  constructor(call: CallContext) {
    this.method = call.method;
    this.path = pathForMatching(call.path);
    this.authority = call.authority.toLowerCase();
    const { host, port } = splitAuthority(this.authority);
    this.host = host;
    this.port = port;
    this.principal = call.source.principal;
    this.address = call.source.address.startsWith('::ffff:') ? call.source.address.slice(7) : call.source.address;
    // The socket's peer or a forwarded address client-address.ts checked: an IP or ''. Only IPv6 has a colon;
    // node's isIPv6 runs a long regular expression, on every call (0.6% of a mesh sidecar's CPU).
    this.family = this.address.includes(':') ? 'ipv6' : 'ipv4';
    const auth = call.annotations.auth;
    this.requestPrincipal = auth?.principal;
    this.claims = auth?.claims;
    this.headers = call.headers;
    this.grpc = call.isGrpc ? grpcTarget(this.path) : undefined;
  }

  /** Namespace of `principal`, if it is a meshgate SPIFFE ID. */
  get namespace(): string | undefined {
    if (this.#namespace === null) this.#namespace = this.principal ? parseSpiffeId(this.principal)?.namespace : undefined;
    return this.#namespace;
  }
}
