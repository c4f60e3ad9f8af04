/** A SPIFFE ID of the form meshgate issues: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>. */
export interface SpiffeId {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const TRUST_DOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

export function isValidTrustDomain(td: string): boolean {
  return td.length <= 255 && TRUST_DOMAIN.test(td);
}

export function formatSpiffeId(id: SpiffeId): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** Parses a meshgate SPIFFE ID; undefined for anything else (other paths, bad characters). */
export function parseSpiffeId(uri: string): SpiffeId | undefined {
  const match = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(uri);
  if (!match) return undefined;
  const [, trustDomain, namespace, serviceAccount] = match as unknown as [string, string, string, string];
  if (!isValidTrustDomain(trustDomain) || !LABEL.test(namespace) || !LABEL.test(serviceAccount)) return undefined;
  return { trustDomain, namespace, serviceAccount };
}

/**
 * The URI SANs of a certificate as Node reports them (`subjectaltname` of
 * getPeerCertificate(), or X509Certificate#subjectAltName): "URI:spiffe://..., DNS:...".
 */
function uriSans(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  const out: string[] = [];
  // Node quotes entries that contain a comma; meshgate IDs never do, so a split on ", " is exact for them.
  for (const part of subjectAltName.split(', ')) if (part.startsWith('URI:')) out.push(part.slice(4));
  return out;
}

/** The one SPIFFE ID of a workload certificate; undefined when there is none or more than one. */
export function spiffeIdOfCertificate(subjectAltName: string | undefined): string | undefined {
  const ids = uriSans(subjectAltName).filter((u) => u.startsWith('spiffe://'));
  return ids.length === 1 ? ids[0] : undefined;
}
