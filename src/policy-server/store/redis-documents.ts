import type { Clock } from '../../core/clock.ts';
import type { DocumentKey } from '../../policy/types.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { Actor, StoreRefusal, StoreWriteResult } from '../contracts.ts';
import type { FileView, ServedDocument } from '../document-merge.ts';
import type { PolicyModel } from '../document-store.ts';
import type { PolicyStoreConnection } from './redis-connection.ts';

/** One admin API document as Redis holds it. */
interface DocumentRecord {
  /** Value of the write counter when it was written: orders writes across replicas. */
  readonly version: number;
  readonly key: DocumentKey;
  readonly text: string;
  readonly author: Actor | null;
  /** ms since the epoch, by the writing replica's clock. */
  readonly updatedAt: number;
}

export interface RedisDocuments {
  /** The admin documents as virtual files `redis:<namespace>/<kind>-<name>.yaml`, for the folder store's merge. */
  files(): ReadonlyMap<string, FileView>;
  onChange(listener: () => void): void;
  /** Validates and writes one document. `servedFromFolder` names the folder file serving a key, if any. */
  put(text: string, actor: Actor | undefined, servedFromFolder: (key: DocumentKey) => string | undefined): Promise<StoreWriteResult>;
  remove(key: DocumentKey, actor: Actor | undefined, servedFromFolder: (key: DocumentKey) => string | undefined): Promise<boolean | StoreRefusal>;
  /** Highest write counter seen, and the number of documents (for /config_dump). */
  stats(): { readonly version: number; readonly documents: number };
  close(): void;
}

export const VIRTUAL_PREFIX = 'redis:';

// KEYS: hash, counter. ARGV: field, record JSON without its version ('' deletes), channel. Returns the new counter, 0 when a delete found nothing.
const WRITE_SCRIPT = `
if ARGV[2] == '' then
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
end
local v = redis.call('INCR', KEYS[2])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], '{"version":' .. v .. ',' .. string.sub(ARGV[2], 2))
end
redis.call('PUBLISH', ARGV[3], tostring(v))
return v
`;

// A Redis that lost everything (restarted without persistence): the first replica back writes what it knows.
// KEYS: hash, counter. ARGV: counter, channel, then field, value pairs. Returns 1 when it wrote.
const RESEED_SCRIPT = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
`;

const virtualFile = (key: DocumentKey): string => {
  const [kind, namespace, name] = key.split('/') as [string, string, string];
  return `${VIRTUAL_PREFIX}${namespace}/${kind.toLowerCase()}-${name}.yaml`;
};

/**
 * The admin API's documents with `store: redis`: Redis is their source of
 * truth. Hash `<prefix>documents` holds one record per document (its YAML,
 * the write counter's value, author, time), counter `<prefix>documents:version`
 * orders the writes, and channel `<prefix>documents` announces each one. Every
 * replica reads the hash again (debounced by push.debounce) on a message and
 * after every reconnect, so all replicas serve the same admin documents; the
 * folder store merges them with the folder's by its usual rules (a document
 * in both: the copy serving keeps serving, the other is reported).
 *
 * Writes are refused while Redis is unreachable (the replica keeps serving
 * what it has), and for documents the folder serves: the folder is a
 * read-only mount here. When Redis comes back with no counter at all (it
 * restarted without persistence), the first replica to notice writes back
 * the documents it holds, so an outage never withdraws an admin-written DENY.
 */
export function createRedisDocuments(conn: PolicyStoreConnection, model: PolicyModel, opts: { readonly debounceMs: number }, deps: { logger: Logger; clock: Clock }): RedisDocuments {
  const hashKey = `${conn.prefix}documents`;
  const counterKey = `${conn.prefix}documents:version`;
  const channel = `${conn.prefix}documents`;
  const log = deps.logger.child({ component: 'policy-store', part: 'documents' });
  const listeners: Array<() => void> = [];
  let records = new Map<DocumentKey, DocumentRecord>();
  let views = new Map<string, FileView>();
  /** Parsed views by record version, so a reload parses only what changed. */
  let parsedByKey = new Map<DocumentKey, { version: number; view: FileView }>();
  let counter = 0;
  let closed = false;
  let loadTimer: NodeJS.Timeout | undefined;
  let loading: Promise<void> | undefined;
  let loadAgain = false;

  const viewOf = async (record: DocumentRecord): Promise<FileView> => {
    const known = parsedByKey.get(record.key);
    if (known && known.version === record.version) return known.view;
    const file = virtualFile(record.key);
    const parsed = await model.parseFile(record.text, file);
    const stored = new Map<DocumentKey, ServedDocument>();
    for (const { index, document, digest } of parsed.documents) {
      const key = `${document.kind}/${document.metadata.namespace}/${document.metadata.name}`;
      if (!stored.has(key)) stored.set(key, { key, document, digest, file, index });
    }
    return { mtimeMs: record.updatedAt, parsed, stored };
  };

  const readOnce = async (): Promise<void> => {
    const reply = await conn.run('documents', (r) => r.multi().get(counterKey).hgetall(hashKey).exec());
    const [[, rawCounter], [, hash]] = reply as [[unknown, string | null], [unknown, Record<string, string>]];
    if (rawCounter === null && records.size > 0) {
      // Redis lost the documents: write back ours, then read what is there (another replica may have won).
      const pairs = [...records.values()].flatMap((rec) => [rec.key, JSON.stringify(rec)]);
      const wrote = await conn.run('documents', (r) => r.eval(RESEED_SCRIPT, 2, hashKey, counterKey, counter, channel, ...pairs));
      if (wrote === 1) log.warn({ documents: records.size, version: counter }, 'Redis had no admin documents (restarted without persistence?): wrote back the ones this replica holds');
      return readOnce();
    }
    const next = new Map<DocumentKey, DocumentRecord>();
    for (const [field, value] of Object.entries(hash)) {
      try {
        const rec = JSON.parse(value) as DocumentRecord;
        if (rec.key === field && typeof rec.text === 'string' && typeof rec.version === 'number') next.set(field, rec);
      } catch {
        log.warn({ field }, 'unreadable admin document record in Redis ignored');
      }
    }
    const nextViews = new Map<string, FileView>();
    const nextParsed = new Map<DocumentKey, { version: number; view: FileView }>();
    for (const rec of next.values()) {
      const view = await viewOf(rec);
      nextViews.set(virtualFile(rec.key), view);
      nextParsed.set(rec.key, { version: rec.version, view });
    }
    if (closed) return;
    const before = [...records.values()]
      .map((r) => `${r.key}@${r.version}`)
      .sort()
      .join();
    records = next;
    views = nextViews;
    parsedByKey = nextParsed;
    counter = Number(rawCounter ?? 0);
    if (
      [...records.values()]
        .map((r) => `${r.key}@${r.version}`)
        .sort()
        .join() !== before
    )
      for (const listener of listeners) listener();
  };

  /** One read at a time; requests meanwhile cause one more. A failure keeps the current documents. */
  const load = (): Promise<void> => {
    if (loading) {
      loadAgain = true;
      return loading;
    }
    loading = (async () => {
      do {
        loadAgain = false;
        await readOnce();
      } while (loadAgain && !closed);
    })().finally(() => {
      loading = undefined;
    });
    return loading;
  };

  const scheduleLoad = (): void => {
    if (closed || loadTimer) return;
    loadTimer = setTimeout(() => {
      loadTimer = undefined;
      load().catch(() => undefined); // counted and logged by the connection; read again on reconnect
    }, opts.debounceMs);
  };

  conn.subscribe(channel, scheduleLoad);
  conn.onUp(() => load());

  const unavailable = (): StoreRefusal => ({ ok: false, refused: 'unavailable', reason: `the policy store (Redis) is unreachable: ${conn.problem()?.error ?? 'not connected'}` });
  const readOnly = (key: DocumentKey, file: string): StoreRefusal => ({
    ok: false,
    refused: 'read_only',
    reason: `${key} is served from ${file} in the policy folder, which the admin API does not write with store: redis; change it there`,
  });
  const write = async (key: DocumentKey, body: string): Promise<number> => Number(await conn.run('write', (r) => r.eval(WRITE_SCRIPT, 2, hashKey, counterKey, key, body, channel)));

  return {
    files: () => views,
    onChange: (listener) => void listeners.push(listener),
    async put(text, actor, servedFromFolder) {
      if (!conn.up()) return unavailable();
      const parsed = await model.parseFile(text, 'api');
      if (parsed.errors.length > 0) return { ok: false, errors: parsed.errors };
      const indexes = new Set([...parsed.documents.map((d) => d.index), ...parsed.errors.map((e) => e.source.index)]);
      if (indexes.size !== 1 || parsed.documents.length !== 1) {
        return { ok: false, errors: [{ source: { file: 'api', index: 0 }, document: undefined, field: '', reason: `expected exactly one document, got ${indexes.size}` }] };
      }
      const { document, digest } = parsed.documents[0]!;
      const key = `${document.kind}/${document.metadata.namespace}/${document.metadata.name}`;
      const folderFile = servedFromFolder(key);
      if (folderFile !== undefined) return readOnly(key, folderFile);
      const body = text.endsWith('\n') ? text : `${text}\n`;
      try {
        await write(key, JSON.stringify({ key, text: body, author: actor ?? null, updatedAt: deps.clock.now() }));
        // The caller reads its own write: the state is current before the promise resolves.
        await load();
      } catch {
        return unavailable();
      }
      return { ok: true, key, digest, file: virtualFile(key) };
    },
    async remove(key, _actor, servedFromFolder) {
      if (!conn.up()) return unavailable();
      if (!records.has(key)) {
        const folderFile = servedFromFolder(key);
        if (folderFile !== undefined) return readOnly(key, folderFile);
      }
      try {
        const version = await write(key, '');
        await load();
        if (version !== 0) return true;
      } catch {
        return unavailable();
      }
      const folderFile = servedFromFolder(key);
      return folderFile !== undefined ? readOnly(key, folderFile) : false;
    },
    stats: () => ({ version: counter, documents: records.size }),
    close() {
      closed = true;
      clearTimeout(loadTimer);
    },
  };
}
