import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

/*
 * Folders that really refuse writes, for tests of what a sidecar does when its
 * stateDir does. chmod is no test as root (root ignores it), so as root a
 * folder is made immutable (chattr +i: even root cannot add, rename or
 * remove an entry, while files in it stay readable), and a full disk is a tiny
 * tmpfs. Each returns the way back, or why it cannot be done here (the test
 * is then skipped with that reason).
 */

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

async function refusesWrites(dir: string): Promise<boolean> {
  try {
    await writeFile(path.join(dir, `.probe-${process.pid}`), 'x');
  } catch {
    return true;
  }
  await rm(path.join(dir, `.probe-${process.pid}`), { force: true });
  return false;
}

/** Makes `dir` take no write (no new, renamed or removed entry); resolves with the undo, or with why not. */
export async function makeReadOnly(dir: string): Promise<(() => Promise<void>) | string> {
  try {
    if (isRoot) await run('chattr', ['+i', dir]);
    else await run('chmod', ['a-w', dir]);
  } catch (err) {
    return `cannot make a folder read-only here (${(err as Error).message.split('\n')[0]})`;
  }
  const undo = async (): Promise<void> => {
    await run(isRoot ? 'chattr' : 'chmod', isRoot ? ['-i', dir] : ['u+w', dir]);
  };
  if (await refusesWrites(dir)) return undo;
  await undo();
  return 'a read-only folder still takes writes here';
}

/** Mounts a tmpfs of `bytes` on `dir` (root only); resolves with the unmount, or with why not. */
export async function mountTinyDisk(dir: string, bytes: number): Promise<(() => Promise<void>) | string> {
  if (!isRoot) return 'mounting a small file system needs root';
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0755`, 'tmpfs', dir]);
  } catch (err) {
    return `cannot mount a tmpfs here (${(err as Error).message.split('\n')[0]})`;
  }
  return async () => {
    await run('umount', [dir]);
  };
}

/** Whether this machine can do both, probed once per test file. */
export async function unwritableSupport(): Promise<{ readOnly: string | undefined; tinyDisk: string | undefined }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'meshgate-probe-'));
  try {
    const ro = await makeReadOnly(dir);
    if (typeof ro !== 'string') await ro();
    const disk = await mountTinyDisk(dir, 65_536);
    if (typeof disk !== 'string') await disk();
    return { readOnly: typeof ro === 'string' ? ro : undefined, tinyDisk: typeof disk === 'string' ? disk : undefined };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
