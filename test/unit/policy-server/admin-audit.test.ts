import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { documentDiff, documentYaml } from '../../../src/policy-server/admin-diff.ts';
import { createPolicyAuditLog } from '../../../src/policy-server/audit-log.ts';
import type { AuditEntry } from '../../../src/policy-server/contracts.ts';
import { authzPolicy } from '../../helpers/policy-fakes.ts';

let dir: string;
let file: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'meshgate-audit-'));
  file = path.join(dir, 'audit.jsonl');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function entry(n: number, extra: Partial<AuditEntry> = {}): AuditEntry {
  return {
    time: new Date(1_800_000_000_000 + n * 1000).toISOString(),
    actor: { subject: 'alice@example.com', role: 'admin', via: 'jwt' },
    action: 'put',
    document: `AuthorizationPolicy/shop/p${n}`,
    diff: '',
    result: 'applied',
    ...extra,
  };
}

describe('policy audit log', () => {
  it('creates the file mode 0600 and writes one JSON line per entry', async () => {
    const log = await createPolicyAuditLog({ file });
    await log.append(entry(1));
    await log.append(entry(2, { result: 'forbidden', reason: 'role developer may not write to production namespace prod' }));
    await log.close();
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const lines = (await readFile(file, 'utf8')).split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toBe('');
    expect(JSON.parse(lines[1]!)).toEqual(entry(2, { result: 'forbidden', reason: 'role developer may not write to production namespace prod' }));
  });

  it('appends: entries survive a reopen and new ones follow them', async () => {
    const first = await createPolicyAuditLog({ file });
    await first.append(entry(1));
    await first.append(entry(2));
    await first.close();
    const second = await createPolicyAuditLog({ file });
    expect((await second.read()).map((e) => e.document)).toEqual(['AuthorizationPolicy/shop/p1', 'AuthorizationPolicy/shop/p2']);
    await second.append(entry(3));
    expect((await second.read()).map((e) => e.document)).toEqual(['AuthorizationPolicy/shop/p1', 'AuthorizationPolicy/shop/p2', 'AuthorizationPolicy/shop/p3']);
    await second.close();
  });

  it('never truncates a file someone else wrote to', async () => {
    await writeFile(file, `${JSON.stringify(entry(0))}\n`, { mode: 0o600 });
    const log = await createPolicyAuditLog({ file });
    await log.append(entry(1));
    await log.close();
    expect((await readFile(file, 'utf8')).split('\n').filter(Boolean)).toHaveLength(2);
  });

  it('reads the newest entries last, up to the limit', async () => {
    const log = await createPolicyAuditLog({ file });
    for (let n = 1; n <= 12; n++) await log.append(entry(n));
    expect((await log.read({ limit: 3 })).map((e) => e.document)).toEqual(['AuthorizationPolicy/shop/p10', 'AuthorizationPolicy/shop/p11', 'AuthorizationPolicy/shop/p12']);
    expect(await log.read({ limit: 0 })).toEqual([]);
    expect(await log.read({ limit: 100 })).toHaveLength(12);
    await log.close();
  });

  it('keeps the order of concurrent appends', async () => {
    const log = await createPolicyAuditLog({ file });
    await Promise.all(Array.from({ length: 50 }, (_, n) => log.append(entry(n))));
    expect((await log.read({ limit: 50 })).map((e) => e.document)).toEqual(Array.from({ length: 50 }, (_, n) => `AuthorizationPolicy/shop/p${n}`));
    await log.close();
  });

  it('reads entries larger than its read chunk, across chunk boundaries', async () => {
    const log = await createPolicyAuditLog({ file });
    const big = `+${'x'.repeat(150_000)}\n`;
    await log.append(entry(1, { diff: big }));
    for (let n = 2; n <= 4; n++) await log.append(entry(n, { diff: `+${'y'.repeat(40_000 + n)}\n` }));
    const all = await log.read({ limit: 10 });
    expect(all.map((e) => e.document)).toEqual([1, 2, 3, 4].map((n) => `AuthorizationPolicy/shop/p${n}`));
    expect(all[0]!.diff).toBe(big);
    expect((await log.read({ limit: 2 })).map((e) => e.diff.length)).toEqual([40_005, 40_006]);
    await log.close();
  });

  it('skips a torn line left by a crash and keeps the entries around it', async () => {
    const log = await createPolicyAuditLog({ file });
    await log.append(entry(1));
    await appendFile(file, '{"time":"2027-01-15T08:00:00.000Z","actor":{"sub\n');
    await log.append(entry(2));
    expect((await log.read()).map((e) => e.document)).toEqual(['AuthorizationPolicy/shop/p1', 'AuthorizationPolicy/shop/p2']);
    await log.close();
  });

  it('rejects the append that failed without blocking the next ones', async () => {
    const log = await createPolicyAuditLog({ file });
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await expect(log.append({ ...entry(1), reason: circular as never })).rejects.toThrow();
    await log.append(entry(2));
    expect((await log.read()).map((e) => e.document)).toEqual(['AuthorizationPolicy/shop/p2']);
    await log.close();
  });
});

describe('document diffs', () => {
  const before = documentYaml(authzPolicy('shop', 'allow-web'));
  const after = documentYaml(authzPolicy('shop', 'allow-web', { action: 'DENY' }));

  it('is a unified diff of the YAML, before -> after', () => {
    const diff = documentDiff('AuthorizationPolicy/shop/allow-web', before, after);
    expect(diff).toBe(
      [
        '--- a/AuthorizationPolicy/shop/allow-web',
        '+++ b/AuthorizationPolicy/shop/allow-web',
        '@@ -7,7 +7,7 @@',
        '   selector:',
        '     services:',
        '       - orders',
        '-  action: ALLOW',
        '+  action: DENY',
        '   rules:',
        '     - from:',
        '         principals:',
        '',
      ].join('\n'),
    );
  });

  it('names /dev/null for a creation or a deletion, and is empty when nothing changes', () => {
    const created = documentDiff('AuthorizationPolicy/shop/allow-web', undefined, before);
    expect(created.split('\n').slice(0, 4)).toEqual(['--- /dev/null', '+++ b/AuthorizationPolicy/shop/allow-web', '@@ -0,0 +1,14 @@', '+apiVersion: meshgate.dev/v1']);
    const deleted = documentDiff('AuthorizationPolicy/shop/allow-web', before, undefined);
    expect(deleted.split('\n').slice(0, 3)).toEqual(['--- a/AuthorizationPolicy/shop/allow-web', '+++ /dev/null', '@@ -1,14 +0,0 @@']);
    expect(documentDiff('AuthorizationPolicy/shop/allow-web', before, before)).toBe('');
  });
});
