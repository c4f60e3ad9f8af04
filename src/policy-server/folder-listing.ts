import type { Dirent, Stats } from 'node:fs';
import { readdir, readlink, stat } from 'node:fs/promises';
import path from 'node:path';

// As `meshgate policy check DIR` (src/policy/parse-documents.ts): the same files, so the same verdicts.
const POLICY_FILE = /\.ya?ml$/i;

/** A policy file of the listing: its stat, or why it cannot be read as one (a dangling link, a link loop...). */
export type ListedFile = { readonly stats: Stats; readonly problem?: undefined } | { readonly stats?: undefined; readonly problem: string };

export interface FolderListing {
  /** Policy files (`*.yaml`, `*.yml`) by path relative to the folder, `/`-separated. */
  readonly files: Map<string, ListedFile>;
  /** Every folder walked, as absolute paths (the root first): what to watch. */
  readonly dirs: string[];
  /** Sub-folders that could not be listed (relative): the files known under them are kept as they were. */
  readonly unlisted: string[];
  /** Entries left out for a reason the user may not expect, with the reason; report each once. */
  readonly skipped: Map<string, string>;
}

/**
 * Walks the policy folder one directory at a time, never following a link to
 * a folder, so no entry can stop the walk: a link loop, a dangling link, an
 * unreadable sub-folder is noted and the walk goes on. Names starting with `.`
 * are ours or tools' (temporary files, `.registry`, swap files, a ConfigMap's
 * `..data`) and are left out without a word. Throws only when the folder
 * itself cannot be listed.
 */
export async function listPolicyFolder(root: string): Promise<FolderListing> {
  const listing: FolderListing = { files: new Map(), dirs: [], unlisted: [], skipped: new Map() };
  const walk = async (rel: string, entries: Dirent[]): Promise<void> => {
    listing.dirs.push(path.join(root, rel));
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const child = rel === '' ? entry.name : `${rel}/${entry.name}`;
      const abs = path.join(root, child);
      const policyName = POLICY_FILE.test(entry.name);
      if (entry.isDirectory()) {
        let inner: Dirent[];
        try {
          inner = await readdir(abs, { withFileTypes: true });
        } catch (err) {
          listing.unlisted.push(child);
          listing.skipped.set(child, `cannot list folder (${codeOf(err)}); the files known under it are kept as they were`);
          continue;
        }
        await walk(child, inner);
      } else if (entry.isSymbolicLink()) {
        // stat follows the link: a ConfigMap mount is a folder of links into ..data.
        let st: Stats;
        try {
          st = await stat(abs);
        } catch (err) {
          const problem = await brokenLink(abs, err);
          if (policyName) listing.files.set(child, { problem });
          else listing.skipped.set(child, `${problem}; skipped`);
          continue;
        }
        if (st.isFile()) {
          if (policyName) listing.files.set(child, { stats: st });
        } else if (st.isDirectory()) listing.skipped.set(child, 'symbolic link to a folder; not followed, its files are not loaded');
        else if (policyName) listing.skipped.set(child, 'links to something that is not a regular file; skipped');
      } else if (policyName) {
        if (!entry.isFile()) {
          // A FIFO would block the read for good.
          listing.skipped.set(child, 'not a regular file; skipped');
          continue;
        }
        try {
          listing.files.set(child, { stats: await stat(abs) });
        } catch (err) {
          // Gone between readdir and stat: the next scan sees it gone; until then, unreadable.
          listing.files.set(child, { problem: `cannot read file (${codeOf(err)})` });
        }
      }
    }
  };
  await walk('', await readdir(root, { withFileTypes: true }));
  return listing;
}

async function brokenLink(abs: string, err: unknown): Promise<string> {
  const code = codeOf(err);
  if (code === 'ELOOP') return 'cannot read file (ELOOP: symbolic link loop)';
  if (code === 'ENOENT') {
    const target = await readlink(abs).catch(() => '?');
    return `cannot read file (ENOENT: dangling symbolic link to ${target})`;
  }
  return `cannot read file (${code})`;
}

function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? String(err);
}
