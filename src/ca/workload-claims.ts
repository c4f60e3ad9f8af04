import { formatSpiffeId, parseSpiffeId } from '../core/spiffe-id.ts';

/** Who a verified token speaks for. */
export interface WorkloadIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly spiffeId: string;
}

const SUBJECT = /^system:serviceaccount:([^:]+):([^:]+)$/;

/**
 * Maps verified JWT claims to a workload identity. One shape for both token
 * kinds: the Kubernetes projected service-account token
 * (`sub: system:serviceaccount:<ns>:<sa>` and `kubernetes.io: { namespace,
 * serviceaccount: { name } }`) and the token `meshgate token` mints, which
 * copies it. Either claim is enough; when both are there they must agree, so
 * a token cannot name one identity in `sub` and another in the private claim.
 * Returns the problem as a string when there is no single valid identity.
 */
export function identityFromClaims(claims: Readonly<Record<string, unknown>>, trustDomain: string): WorkloadIdentity | string {
  let fromSub: [string, string] | undefined;
  if (typeof claims.sub === 'string') {
    const match = SUBJECT.exec(claims.sub);
    if (match) fromSub = [match[1]!, match[2]!];
  }
  let fromK8s: [string, string] | undefined;
  const k8s = claims['kubernetes.io'];
  if (k8s !== undefined) {
    const ns = (k8s as { namespace?: unknown } | null)?.namespace;
    const sa = (k8s as { serviceaccount?: { name?: unknown } | null } | null)?.serviceaccount?.name;
    if (typeof ns !== 'string' || typeof sa !== 'string') return 'claim "kubernetes.io" lacks namespace or serviceaccount.name';
    fromK8s = [ns, sa];
  }
  const pair = fromSub ?? fromK8s;
  if (!pair) return 'no service account: expected sub "system:serviceaccount:<namespace>:<name>" or a "kubernetes.io" claim';
  if (fromSub && fromK8s && (fromSub[0] !== fromK8s[0] || fromSub[1] !== fromK8s[1])) {
    return 'claims "sub" and "kubernetes.io" name different service accounts';
  }
  const [namespace, serviceAccount] = pair;
  const spiffeId = formatSpiffeId({ trustDomain, namespace, serviceAccount });
  // Round-trips only when both names are DNS labels: no '/', '..' or upper case can reach a SAN.
  if (!parseSpiffeId(spiffeId)) return `namespace "${namespace.slice(0, 64)}" or service account "${serviceAccount.slice(0, 64)}" is not a DNS label`;
  return { namespace, serviceAccount, spiffeId };
}
