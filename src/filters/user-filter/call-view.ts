import type { CallContext } from '../../core/call-context.ts';
import type { CallRoute } from '../../proxy/route-header.ts';
import { parseRouteHeader, ROUTE_HEADER } from '../../proxy/route-header.ts';

/**
 * What a check of your own sees of a call (types/meshgate-filter.d.ts
 * publishes its shape): plain JSON, built per call and frozen in the guest.
 * The body is not part of it: checks run before the body is read.
 */
export interface CallView {
  readonly method: string;
  /** The normalized path, without the query. */
  readonly path: string;
  /** The raw query string without `?` ('' for none). */
  readonly query: string;
  /** Lower-case names; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string>>;
  readonly source: { readonly address: string; readonly principal: string | null };
  readonly destination: { readonly service: string; readonly namespace: string };
  /** The verified request credential (a RequestAuthentication document's JWT or introspection), null when none. */
  readonly auth: { readonly principal: string; readonly issuer: string; readonly subject: string; readonly claims: Readonly<Record<string, unknown>> } | null;
  /**
   * The route the caller's sidecar matched and the labels of the version it
   * sent the call to (src/proxy/route-header.ts); null for a caller without a
   * verified mesh identity (its claim could be anyone's).
   */
  readonly route: CallRoute | null;
}

export function callViewOf(call: CallContext): CallView {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(call.headers)) {
    if (value === undefined || name === ROUTE_HEADER) continue;
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  const auth = call.annotations.auth;
  return {
    method: call.method,
    path: call.path,
    query: call.query,
    headers,
    source: { address: call.source.address, principal: call.source.principal ?? null },
    destination: { service: call.destination.service, namespace: call.destination.namespace },
    auth: auth ? { principal: auth.principal, issuer: auth.issuer, subject: auth.subject, claims: auth.claims } : null,
    route: call.source.principal ? (parseRouteHeader(call.headers[ROUTE_HEADER]) ?? null) : null,
  };
}
