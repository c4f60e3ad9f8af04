import type { Call, Verdict } from 'meshgate/filter';

/*
 * Tenant isolation: a caller's verified token names its tenant (a claim), and
 * may only reach paths of that tenant: /tenants/{tenant}/... A call without a
 * token, or for another tenant, is denied. Paths outside /tenants/ are not
 * this check's concern.
 */

interface Config {
  /** The JWT claim holding the caller's tenant. */
  readonly claim: string;
  /** The path prefix whose next segment is the tenant. */
  readonly prefix: string;
}

export default function check(call: Call, config: Config): Verdict {
  if (!call.path.startsWith(config.prefix)) return { allow: true };
  const tenant = call.path.slice(config.prefix.length).split('/')[0];
  if (!tenant) return { deny: { code: 'tenant_missing', reason: 'the path names no tenant' } };
  const claimed = call.auth?.claims[config.claim];
  if (typeof claimed !== 'string') return { deny: { code: 'tenant_unknown', reason: 'the credential names no tenant' } };
  if (claimed !== tenant) return { deny: { code: 'tenant_mismatch', reason: 'this credential is for another tenant' } };
  return { allow: true };
}
