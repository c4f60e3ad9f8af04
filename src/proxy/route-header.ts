/*
 * Which route a call took, told by the caller's sidecar to the destination's.
 * The caller's sidecar matches the call to a route of its destination
 * (outbound); the destination's sidecar does not know the caller's routes, yet
 * its checks of your own see "the route and its labels" (the call view). So
 * the outbound sidecar names them in one header on calls to peer sidecars
 * (mesh mTLS) and removes any value the app set; the inbound sidecar believes
 * it only on a call with a verified peer principal, and never passes it to the
 * app. Format: the route name, then `;key=value` per label of the version the
 * call was sent to (its subset), each part percent-encoded.
 */

export const ROUTE_HEADER = 'x-meshgate-route';

/** Longest value read: a route name (<= 63) and a few labels (keys <= 253, values <= 63) fit many times over. */
const MAX_ROUTE_HEADER = 2048;
const MAX_LABELS = 32;

export interface CallRoute {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

export function formatRouteHeader(name: string, labels: Readonly<Record<string, string>> | undefined): string {
  let value = encodeURIComponent(name);
  for (const [key, label] of Object.entries(labels ?? {})) value += `;${encodeURIComponent(key)}=${encodeURIComponent(label)}`;
  return value;
}

/**
 * formatRouteHeader's value per route and label subset, made once: both come from the routes
 * compiled from a policy (the subset of a weighted backend or of a version), so the same few values
 * are written on every call. Weakly held: a policy's new routes replace the old ones, which go with their values.
 */
export function createRouteHeaderCache(): (route: { readonly name: string }, labels: Readonly<Record<string, string>> | undefined) => string {
  const byRoute = new WeakMap<object, { plain?: string; bySubset: WeakMap<object, string> }>();
  return (route, labels) => {
    let values = byRoute.get(route);
    if (values === undefined) byRoute.set(route, (values = { bySubset: new WeakMap() }));
    if (labels === undefined) return (values.plain ??= formatRouteHeader(route.name, undefined));
    let value = values.bySubset.get(labels);
    if (value === undefined) values.bySubset.set(labels, (value = formatRouteHeader(route.name, labels)));
    return value;
  };
}

/** The route of a header value, or undefined for one that is absent, repeated, too long or malformed. */
export function parseRouteHeader(value: string | string[] | undefined): CallRoute | undefined {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_ROUTE_HEADER) return undefined;
  const parts = value.split(';');
  if (parts.length - 1 > MAX_LABELS) return undefined;
  try {
    const name = decodeURIComponent(parts[0]!);
    if (name.length === 0) return undefined;
    const labels: [string, string][] = [];
    for (const part of parts.slice(1)) {
      const eq = part.indexOf('=');
      if (eq <= 0) return undefined;
      labels.push([decodeURIComponent(part.slice(0, eq)), decodeURIComponent(part.slice(eq + 1))]);
    }
    // fromEntries defines own properties: a `__proto__` label is a label, not a prototype.
    return { name, labels: Object.fromEntries(labels) };
  } catch {
    return undefined; // a broken percent-encoding
  }
}
