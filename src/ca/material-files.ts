import { lstat, unlink, writeFile } from 'node:fs/promises';

/*
 * How `meshgate certs init` and `meshgate certs webhook` put key material on
 * disk: refuse to overwrite what exists unless --force, and never write
 * through a file or symlink that appeared after the check.
 */

/** A file the command would write already exists and --force was not given. */
export class FileExistsError extends Error {
  override readonly name = 'FileExistsError';
  readonly file: string;
  constructor(file: string) {
    super(`${file}: already exists (use --force to overwrite)`);
    this.file = file;
  }
}

export async function pathExists(file: string): Promise<boolean> {
  try {
    await lstat(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Throws FileExistsError for the first of `files` that exists, unless `force`. */
export async function refuseExisting(files: readonly string[], force: boolean): Promise<void> {
  if (force) return;
  for (const file of files) if (await pathExists(file)) throw new FileExistsError(file);
}

/** Writes one file of key material: a secret is 0600, the rest 0644. */
export async function writeMaterial(file: string, data: string, secret: boolean, force: boolean): Promise<void> {
  if (force) await unlink(file).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
  // 'wx': never follow a file (or symlink) that appeared since the check.
  await writeFile(file, data, { flag: 'wx', mode: secret ? 0o600 : 0o644 });
}
