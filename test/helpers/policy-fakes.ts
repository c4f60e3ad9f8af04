import { createHash } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import type { PolicyDocument, PolicyError, RegistryService } from '../../src/policy/types.ts';
import { POLICY_API_VERSION, POLICY_KINDS } from '../../src/policy/types.ts';
import type { DocumentStore, StoredDocument, StoreWriteResult, SubscriberDirectory, SubscriberView } from '../../src/policy-server/contracts.ts';

/*
 * Small in-memory stand-ins for the policy-server seams, for tests of the
 * admin API apart from the real folder store and stream. The validation here
 * is a sketch of the real one: enough to produce exact PolicyErrors.
 */

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function digestOf(document: unknown): string {
  return createHash('sha256').update(canonical(document)).digest('hex');
}

/** Validates the envelope of one document the way the real validator words errors. */
export function fakeValidate(value: unknown, file = 'api', index = 0): { document: PolicyDocument } | { errors: PolicyError[] } {
  const errors: PolicyError[] = [];
  const v = (value ?? {}) as Record<string, unknown>;
  const metadata = (v.metadata ?? {}) as Record<string, unknown>;
  const key = typeof v.kind === 'string' && typeof metadata.namespace === 'string' && typeof metadata.name === 'string' ? `${v.kind}/${metadata.namespace}/${metadata.name}` : undefined;
  const err = (field: string, reason: string) => errors.push({ source: { file, index }, document: key, field, reason });
  if (v.apiVersion !== POLICY_API_VERSION) err('apiVersion', `expected ${POLICY_API_VERSION}`);
  if (!POLICY_KINDS.includes(v.kind as never)) err('kind', `expected one of ${POLICY_KINDS.join(', ')}`);
  if (typeof metadata.name !== 'string' || !NAME.test(metadata.name)) err('metadata.name', 'expected a DNS label');
  if (typeof metadata.namespace !== 'string' || !NAME.test(metadata.namespace)) err('metadata.namespace', 'expected a DNS label');
  if (v.spec === null || typeof v.spec !== 'object' || Array.isArray(v.spec)) err('spec', 'missing required field (expected object)');
  else {
    const rules = (v.spec as Record<string, unknown>).rules;
    if (rules !== undefined && !Array.isArray(rules)) err('spec.rules', 'expected an array');
  }
  return errors.length > 0 ? { errors } : { document: value as PolicyDocument };
}

export interface FakeDocumentStore extends DocumentStore {
  /** Puts a document as if read from the folder, bypassing the API. */
  seed(document: PolicyDocument, file?: string): void;
  /** Sets the folder's current validation errors. */
  setErrors(errors: PolicyError[]): void;
  /** Every text handed to put(), valid or not. */
  readonly puts: string[];
  /** Makes the next put() or remove() throw. */
  failNext(err: Error): void;
}

export function createFakeDocumentStore(): FakeDocumentStore {
  const docs = new Map<string, StoredDocument>();
  let folderErrors: PolicyError[] = [];
  const listeners: Array<() => void> = [];
  const puts: string[] = [];
  let failure: Error | undefined;
  const changed = () => {
    for (const l of listeners) l();
  };
  const takeFailure = () => {
    const err = failure;
    failure = undefined;
    if (err) throw err;
  };
  const store = (document: PolicyDocument, file: string): StoredDocument => {
    const key = `${document.kind}/${document.metadata.namespace}/${document.metadata.name}`;
    const entry = { key, document, digest: digestOf(document), file };
    docs.set(key, entry);
    return entry;
  };
  return {
    puts,
    documents: () => [...docs.values()],
    errors: () => folderErrors,
    async put(text): Promise<StoreWriteResult> {
      puts.push(text);
      takeFailure();
      let value: unknown;
      try {
        value = parseYaml(text);
      } catch (err) {
        return { ok: false, errors: [{ source: { file: 'api', index: 0 }, document: undefined, field: '', reason: `invalid YAML: ${(err as Error).message}` }] };
      }
      const checked = fakeValidate(value);
      if ('errors' in checked) return { ok: false, errors: checked.errors };
      const key = `${checked.document.kind}/${checked.document.metadata.namespace}/${checked.document.metadata.name}`;
      const entry = store(checked.document, `api/${key.replaceAll('/', '_')}.yaml`);
      changed();
      return { ok: true, key: entry.key, digest: entry.digest, file: entry.file };
    },
    async remove(key) {
      takeFailure();
      const had = docs.delete(key);
      if (had) changed();
      return had;
    },
    onChange(listener) {
      listeners.push(listener);
    },
    async close() {},
    seed(document, file = `${document.metadata.namespace}/${document.metadata.name}.yaml`) {
      store(document, file);
    },
    setErrors(errors) {
      folderErrors = errors;
    },
    failNext(err) {
      failure = err;
    },
  };
}

export interface FakeSubscriberDirectory extends SubscriberDirectory {
  subscribersList: SubscriberView[];
  services: RegistryService[];
}

export function createFakeSubscriberDirectory(init: { subscribers?: SubscriberView[]; services?: RegistryService[] } = {}): FakeSubscriberDirectory {
  const dir: FakeSubscriberDirectory = {
    subscribersList: init.subscribers ?? [],
    services: init.services ?? [],
    subscribers: () => dir.subscribersList,
    registry: () => dir.services,
  };
  return dir;
}

/** A valid AuthorizationPolicy for tests. */
export function authzPolicy(namespace: string, name: string, extra: Record<string, unknown> = {}): PolicyDocument {
  return {
    apiVersion: POLICY_API_VERSION,
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace },
    spec: { selector: { services: ['orders'] }, action: 'ALLOW', rules: [{ from: { principals: ['spiffe://cluster.local/ns/shop/sa/web'] } }], ...extra },
  };
}
