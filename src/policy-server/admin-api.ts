import type { IncomingMessage, ServerResponse } from 'node:http';
import { sendAdminError, sendJson, sendText } from '../admin/admin-reply.ts';
import type { AdminRole } from '../config/admin-api-schema.ts';
import type { Clock } from '../core/clock.ts';
import type { ReasonCode } from '../core/reason-codes.ts';
import type { PolicyError } from '../policy/types.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { AdminAuthenticator, AdminCaller } from './admin-auth.ts';
import { parseDocumentBody, readBody } from './admin-body.ts';
import { documentDiff, documentYaml } from './admin-diff.ts';
import { MAX_AUDIT_READ } from './audit-log.ts';
import type { Actor, AuditEntry, AuditLog, DocumentStore, StoredDocument, SubscriberDirectory } from './contracts.ts';
import type { Rbac } from './rbac.ts';

export interface AdminApiDeps {
  readonly store: DocumentStore;
  readonly directory: SubscriberDirectory;
  readonly audit: AuditLog;
  readonly auth: AdminAuthenticator;
  readonly rbac: Rbac;
  readonly clock: Clock;
  /** Largest request body (adminApi.maxBodyBytes); 256 KiB when omitted. */
  readonly maxBodyBytes?: number;
  /** Change attempts at info, refusals at debug. Never given a token. */
  readonly logger?: Logger;
}

/** A node:http request handler that answers `/api/v1/...` and returns false for every other path. */
export type AdminRequestHandler = (req: IncomingMessage, res: ServerResponse) => boolean;

/** A validation error as the admin API shows it: `document` is the 0-based index in the file, `key` its kind/namespace/name. */
interface AdminDocumentError {
  readonly file: string;
  readonly document: number;
  readonly key: string | null;
  readonly field: string;
  readonly reason: string;
}

const PREFIX = '/api/v1';
const DEFAULT_MAX_BODY = 256 * 1024;
const DEFAULT_AUDIT_LIMIT = 100;
/** Kinds, namespaces and names as they may appear in a path; the store validates them properly. */
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

type Route =
  | { readonly name: 'documents' | 'errors' | 'sidecars' | 'registry' | 'audit' | 'whoami'; readonly methods: readonly string[] }
  | { readonly name: 'document'; readonly methods: readonly string[]; readonly kind: string; readonly namespace: string; readonly docName: string; readonly key: string };

type RouteResult = Route | { readonly error: ReasonCode<'admin'>; readonly reason: string };

const COLLECTIONS = new Set(['documents', 'errors', 'sidecars', 'registry', 'audit', 'whoami']);

function route(path: string): RouteResult {
  const segments = path.slice(PREFIX.length + 1).split('/');
  const [head, ...rest] = segments;
  if (head === undefined || !COLLECTIONS.has(head)) return { error: 'admin.not_found', reason: `no admin API path ${path}` };
  if (rest.length === 0) return { name: head as Exclude<Route['name'], 'document'>, methods: ['GET'] };
  if (head !== 'documents' || rest.length !== 3) return { error: 'admin.not_found', reason: `no admin API path ${path}` };
  const decoded: string[] = [];
  for (const raw of rest) {
    let value: string;
    try {
      value = decodeURIComponent(raw);
    } catch {
      return { error: 'admin.bad_request', reason: `path segment ${JSON.stringify(raw.slice(0, 80))} is not valid percent-encoding` };
    }
    if (!SEGMENT.test(value)) return { error: 'admin.bad_request', reason: `path segment ${JSON.stringify(value.slice(0, 80))} is not a kind, namespace or name` };
    decoded.push(value);
  }
  const [kind, namespace, docName] = decoded as [string, string, string];
  return { name: 'document', methods: ['GET', 'PUT', 'DELETE'], kind, namespace, docName, key: `${kind}/${namespace}/${docName}` };
}

function toAdminError(e: PolicyError): AdminDocumentError {
  return { file: e.source.file, document: e.source.index, key: e.document ?? null, field: e.field, reason: e.reason };
}

function describeDocument(d: StoredDocument) {
  return { key: d.key, kind: d.document.kind, namespace: d.document.metadata.namespace, name: d.document.metadata.name, digest: d.digest, file: d.file };
}

/** Errors in a short line for the audit log's `reason`. */
function summarise(errors: readonly AdminDocumentError[]): string {
  const text = errors.map((e) => (e.field ? `${e.field}: ${e.reason}` : e.reason)).join('; ');
  return text.length > 1000 ? `${text.slice(0, 997)}...` : text;
}

/**
 * The policy-server admin API: documents (read, write, delete), validation
 * errors, sidecars and their versions and NACKs, the registry, and the audit
 * log. Every request is authenticated first (so an unknown path tells an
 * anonymous caller nothing), then routed, then authorised by role.
 *
 * Writes are serialised: the document's "before" for the audit diff, the
 * store write and the audit entry happen as one step, so entries of one
 * replica read as a consistent history. Every write attempt by an
 * authenticated caller with a role is audited, refused or not.
 */
export function createAdminApi(deps: AdminApiDeps): AdminRequestHandler {
  const maxBody = deps.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const log = deps.logger;
  let writeQueue: Promise<unknown> = Promise.resolve();

  function serialised<T>(task: () => Promise<T>): Promise<T> {
    const run = writeQueue.then(task);
    writeQueue = run.catch(() => undefined);
    return run;
  }

  function fail(req: IncomingMessage, res: ServerResponse, code: ReasonCode<'admin'>, reason: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): void {
    // An unread body would otherwise have to be drained before the connection could carry another request.
    const close: Record<string, string> = req.complete ? {} : { connection: 'close' };
    sendAdminError(res, code, reason, extra, { ...headers, ...close });
  }

  function stored(key: string): StoredDocument | undefined {
    return deps.store.documents().find((d) => d.key === key);
  }

  function findYaml(key: string): string | undefined {
    const doc = stored(key);
    return doc ? documentYaml(doc.document) : undefined;
  }

  /** Appends the entry; false (and an error log) when the audit log could not take it. */
  async function record(entry: AuditEntry): Promise<boolean> {
    log?.info(
      { subject: entry.actor.subject, via: entry.actor.via, role: entry.actor.role, action: entry.action, document: entry.document, result: entry.result, reason: entry.reason },
      `admin: ${entry.action} ${entry.document} ${entry.result}`,
    );
    try {
      await deps.audit.append(entry);
      return true;
    } catch (err) {
      log?.error({ err, action: entry.action, document: entry.document, result: entry.result }, 'admin: audit entry could not be written');
      return false;
    }
  }

  async function serveRead(req: IncomingMessage, res: ServerResponse, r: Route, caller: AdminCaller, role: AdminRole | undefined, query: URLSearchParams): Promise<void> {
    switch (r.name) {
      case 'whoami':
        return sendJson(res, 200, { subject: caller.subject, via: caller.via, role: role ?? null });
      case 'documents': {
        const kind = query.get('kind');
        const namespace = query.get('namespace');
        const documents = deps.store
          .documents()
          .filter((d) => (kind === null || d.document.kind === kind) && (namespace === null || d.document.metadata.namespace === namespace))
          .map(describeDocument)
          .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
        return sendJson(res, 200, { documents });
      }
      case 'document': {
        const doc = stored(r.key);
        if (!doc) return fail(req, res, 'admin.not_found', `no document ${r.key}`);
        if (/\byaml\b/i.test(req.headers.accept ?? '')) {
          return sendText(res, 200, 'application/yaml', documentYaml(doc.document), { etag: `"${doc.digest}"` });
        }
        return sendJson(res, 200, { key: doc.key, digest: doc.digest, file: doc.file, document: doc.document }, { etag: `"${doc.digest}"` });
      }
      case 'errors':
        return sendJson(res, 200, { errors: deps.store.errors().map(toAdminError) });
      case 'sidecars':
        return sendJson(res, 200, {
          sidecars: deps.directory.subscribers().map((s) => ({ ...s, inSync: s.sentVersion !== undefined && s.sentVersion === s.ackedVersion })),
        });
      case 'registry':
        return sendJson(res, 200, { services: deps.directory.registry() });
      case 'audit': {
        const raw = query.get('limit');
        let limit = DEFAULT_AUDIT_LIMIT;
        if (raw !== null) {
          if (!/^\d{1,7}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_AUDIT_READ) {
            return fail(req, res, 'admin.bad_request', `limit must be an integer from 1 to ${MAX_AUDIT_READ}`);
          }
          limit = Number(raw);
        }
        return sendJson(res, 200, { entries: await deps.audit.read({ limit }) });
      }
    }
  }

  async function servePut(req: IncomingMessage, res: ServerResponse, r: Extract<Route, { name: 'document' }>, actor: Actor, refusal: string | undefined): Promise<void> {
    const body = await readBody(req, maxBody);
    await serialised(async () => {
      const base = { time: new Date(deps.clock.now()).toISOString(), actor, action: 'put', document: r.key } as const;
      const before = findYaml(r.key);
      if (!body.ok) {
        const reason = `body larger than ${maxBody} bytes`;
        await record({ ...base, diff: '', result: refusal ? 'forbidden' : 'rejected', reason: refusal ?? reason });
        if (refusal) return fail(req, res, 'admin.forbidden', refusal);
        return fail(req, res, 'admin.body_too_large', reason);
      }
      const parsed = parseDocumentBody(body.text);
      const after = parsed.ok ? documentYaml(parsed.value) : body.text;
      const diff = documentDiff(r.key, before, after);
      if (refusal) {
        await record({ ...base, diff, result: 'forbidden', reason: refusal });
        return fail(req, res, 'admin.forbidden', refusal);
      }
      const mismatch: AdminDocumentError[] = parsed.ok ? pathMismatches(parsed.value, r) : [{ file: 'api', document: 0, key: null, field: parsed.field, reason: parsed.reason }];
      if (mismatch.length > 0) {
        await record({ ...base, diff, result: 'rejected', reason: summarise(mismatch) });
        return fail(req, res, 'admin.invalid_document', `${r.key} is not valid`, { errors: mismatch });
      }
      // The store gets the YAML shown in the diff, so what was checked against the path is what is written.
      const result = await deps.store.put(after, actor);
      if (!result.ok && 'refused' in result) {
        await record({ ...base, diff, result: 'rejected', reason: result.reason });
        return fail(req, res, result.refused === 'read_only' ? 'admin.read_only' : 'admin.store_unavailable', result.reason);
      }
      if (!result.ok) {
        const errors = result.errors.map(toAdminError);
        await record({ ...base, diff, result: 'rejected', reason: summarise(errors) });
        return fail(req, res, 'admin.invalid_document', `${r.key} is not valid`, { errors });
      }
      if (result.key !== r.key) log?.error({ expected: r.key, written: result.key }, 'admin: the store wrote a document under another key than the path');
      const audited = await record({ ...base, diff, result: 'applied' });
      const reply = { result: 'applied', key: result.key, digest: result.digest, file: result.file, created: before === undefined };
      if (!audited) return fail(req, res, 'admin.audit_failed', 'the change was applied but its audit entry could not be written', { applied: true, key: result.key });
      sendJson(res, before === undefined ? 201 : 200, reply);
    });
  }

  async function serveDelete(req: IncomingMessage, res: ServerResponse, r: Extract<Route, { name: 'document' }>, actor: Actor, refusal: string | undefined): Promise<void> {
    await serialised(async () => {
      const base = { time: new Date(deps.clock.now()).toISOString(), actor, action: 'delete', document: r.key } as const;
      const before = findYaml(r.key);
      const diff = documentDiff(r.key, before, undefined);
      if (refusal) {
        await record({ ...base, diff, result: 'forbidden', reason: refusal });
        return fail(req, res, 'admin.forbidden', refusal);
      }
      const removed = await deps.store.remove(r.key, actor);
      if (typeof removed === 'object') {
        await record({ ...base, diff: '', result: 'rejected', reason: removed.reason });
        return fail(req, res, removed.refused === 'read_only' ? 'admin.read_only' : 'admin.store_unavailable', removed.reason);
      }
      if (!removed) {
        await record({ ...base, diff: '', result: 'rejected', reason: 'no such document' });
        return fail(req, res, 'admin.not_found', `no document ${r.key}`);
      }
      if (!(await record({ ...base, diff, result: 'applied' }))) {
        return fail(req, res, 'admin.audit_failed', 'the document was deleted but its audit entry could not be written', { applied: true, key: r.key });
      }
      sendJson(res, 200, { result: 'applied', key: r.key });
    });
  }

  async function serve(req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams): Promise<void> {
    const caller = await deps.auth.authenticate(req);
    if (!caller.ok) {
      log?.debug({ path, reason: caller.reason }, 'admin: unauthenticated');
      return fail(req, res, 'admin.unauthenticated', caller.reason, {}, { 'www-authenticate': 'Bearer' });
    }
    const r = route(path);
    if ('error' in r) return fail(req, res, r.error, r.reason);
    const method = req.method ?? 'GET';
    if (!r.methods.includes(method)) {
      return fail(req, res, 'admin.method_not_allowed', `${method} not allowed on ${path}`, {}, { allow: r.methods.join(', ') });
    }
    const write = method === 'PUT' || method === 'DELETE';
    if (!write) {
      const decision = r.name === 'whoami' ? { allowed: true as const, role: deps.rbac.roleOf(caller.subject) } : deps.rbac.decide(caller.subject, 'read');
      if (!decision.allowed) return fail(req, res, 'admin.forbidden', decision.reason);
      return serveRead(req, res, r, caller, decision.role, query);
    }
    if (r.name !== 'document') return fail(req, res, 'admin.method_not_allowed', `${method} not allowed on ${path}`, {}, { allow: r.methods.join(', ') });
    const decision = deps.rbac.decide(caller.subject, 'write', r.namespace);
    // An Actor needs a role: a subject with none is refused and logged, not audited.
    if (decision.role === undefined) {
      log?.warn({ subject: caller.subject, via: caller.via, method, document: r.key }, 'admin: write by a subject without a role binding refused');
      return fail(req, res, 'admin.forbidden', decision.allowed ? 'forbidden' : decision.reason);
    }
    const actor: Actor = { subject: caller.subject, role: decision.role, via: caller.via };
    const refusal = decision.allowed ? undefined : decision.reason;
    if (method === 'PUT') return servePut(req, res, r, actor, refusal);
    return serveDelete(req, res, r, actor, refusal);
  }

  return (req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path !== PREFIX && !path.startsWith(`${PREFIX}/`)) return false;
    const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
    serve(req, res, path, query).catch((err: unknown) => {
      log?.error({ err, method: req.method, path }, 'admin: request failed');
      fail(req, res, 'admin.internal', 'internal error');
    });
    return true;
  };
}

/** The document must name the same kind, namespace and name as the path it is PUT to. */
function pathMismatches(value: unknown, r: Extract<Route, { name: 'document' }>): AdminDocumentError[] {
  const doc = value as { kind?: unknown; metadata?: { namespace?: unknown; name?: unknown } };
  const metadata = doc.metadata !== null && typeof doc.metadata === 'object' ? doc.metadata : {};
  const checks: Array<[string, unknown, string]> = [
    ['kind', doc.kind, r.kind],
    ['metadata.namespace', metadata.namespace, r.namespace],
    ['metadata.name', metadata.name, r.docName],
  ];
  const out: AdminDocumentError[] = [];
  for (const [field, actual, expected] of checks) {
    if (actual !== expected) {
      out.push({
        file: 'api',
        document: 0,
        key: r.key,
        field,
        reason: `does not match the path: expected ${JSON.stringify(expected)}, got ${actual === undefined ? 'nothing' : JSON.stringify(actual)?.slice(0, 80)}`,
      });
    }
  }
  return out;
}
