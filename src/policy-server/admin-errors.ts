import type { ServerResponse } from 'node:http';
import { ADMIN_LISTENER_ERRORS, sendErrorBody, sendJson, sendText } from '../admin/admin-reply.ts';

/**
 * Every error code of the policy-server admin API with its HTTP status.
 * Codes are part of the contract (scripts branch on them); a unit test checks
 * each is documented in the README's admin API section.
 */
export const ADMIN_ERROR_CODES = {
  'admin.unauthenticated': { http: 401, description: 'No credentials, or a client certificate or bearer token that does not verify; `reason` says which.' },
  'admin.forbidden': { http: 403, description: 'The caller has no role binding, or its role may not do this (a viewer writing, a developer writing to a production namespace).' },
  'admin.invalid_document': { http: 400, description: 'The document does not validate or does not match the path; `errors` lists file, document, field and reason. Nothing was written.' },
  ...ADMIN_LISTENER_ERRORS,
  'admin.bad_request': { http: 400, description: 'A malformed path segment or query parameter.' },
  'admin.body_too_large': { http: 413, description: 'The request body exceeds `adminApi.maxBodyBytes`.' },
  'admin.read_only': {
    http: 409,
    description: 'With `store: redis`, the document comes from the mounted policy folder (a ConfigMap), which the admin API does not write: change it there. Nothing was written.',
  },
  'admin.store_unavailable': { http: 503, description: 'With `store: redis`, Redis is unreachable (the replica is degraded): writes are refused until it is back. Nothing was written; retry.' },
  'admin.audit_failed': { http: 500, description: 'The change attempt could not be recorded in the audit log; `applied` says whether the change took effect.' },
  'admin.internal': { http: 500, description: 'An unexpected error; details are in the server log.' },
} as const satisfies Record<string, { http: number; description: string }>;

export type AdminErrorCode = keyof typeof ADMIN_ERROR_CODES;

/** The one place admin API errors become bytes: `{code, reason, ...extra}` as JSON, as the admin listener's own. */
export function sendAdminError(res: ServerResponse, code: AdminErrorCode, reason: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): void {
  sendErrorBody(res, ADMIN_ERROR_CODES[code].http, code, reason, extra, headers);
}

export { sendJson, sendText };
