import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSecretFiles } from '../../../src/filters/user-filter/secret-files.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';

describe('secret files for checks of your own (userFilters.secretsDir)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-secret-files-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('gives a document only the names it lists, and nothing outside the folder', async () => {
    await writeFile(path.join(dir, 'k1'), 'key-one');
    await writeFile(path.join(dir, 'k2'), 'key-two');
    const errors: string[] = [];
    const keys = createSecretFiles({ dir, clock: createFakeClock(), onError: (name, problem) => errors.push(`${name}: ${problem}`) }).forDocument(['k1', '../etc/passwd']);
    expect(keys('k1')?.toString()).toBe('key-one');
    expect(keys('k2')).toBeUndefined(); // in the folder, not listed
    expect(keys('../etc/passwd')).toBeUndefined(); // listed (the schema would refuse it), read as a name inside the folder
    expect(errors).toEqual(['../etc/passwd: ENOENT']);
  });

  it('uses a rotated key once the reload interval has passed (the kubelet swaps a mounted Secret in place)', async () => {
    const clock = createFakeClock();
    await writeFile(path.join(dir, 'key'), 'old');
    const keys = createSecretFiles({ dir, clock }).forDocument(['key']);
    expect(keys('key')?.toString()).toBe('old');
    await writeFile(path.join(dir, 'key'), 'new');
    expect(keys('key')?.toString()).toBe('old'); // read at most every 10 s
    clock.advance(10_000);
    expect(keys('key')?.toString()).toBe('new');
  });

  it("refuses an empty file and one too large to be a key, and follows the folder's own links (a Secret volume is links)", async () => {
    await writeFile(path.join(dir, 'empty'), '');
    await writeFile(path.join(dir, 'huge'), Buffer.alloc(5000));
    await writeFile(path.join(dir, '..data-key'), 'linked');
    await symlink(path.join(dir, '..data-key'), path.join(dir, 'linked'));
    const keys = createSecretFiles({ dir, clock: createFakeClock() }).forDocument(['empty', 'huge', 'linked']);
    expect(keys('empty')).toBeUndefined();
    expect(keys('huge')).toBeUndefined();
    expect(keys('linked')?.toString()).toBe('linked');
  });
});
