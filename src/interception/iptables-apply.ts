import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { Rule, RuleSet } from './iptables-rules.ts';
import { restoreText } from './iptables-rules.ts';

/*
 * Installs and removes a RuleSet with the iptables the system has (Debian's
 * is the nf_tables backend; the legacy one takes the same input). One
 * iptables-restore --noflush call replaces our chains' contents atomically;
 * the two jumps into them are checked (-C) first and added only when missing.
 */

interface CommandResult {
  readonly code: number;
  readonly stderr: string;
}

/** Runs one command with `stdin`; a missing binary is code 127. */
export type CommandRunner = (command: string, args: readonly string[], stdin?: string) => Promise<CommandResult>;

export class IptablesError extends Error {}

// Root's tools live in sbin, which some shells (and `su` without -l) leave off PATH.
const SBIN = '/usr/local/sbin:/usr/sbin:/sbin';

const runCommand: CommandRunner = (command, args, stdin) =>
  new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['pipe', 'ignore', 'pipe'], env: { ...process.env, PATH: `${process.env.PATH ?? ''}:${SBIN}` } });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', (err: NodeJS.ErrnoException) => resolve({ code: err.code === 'ENOENT' ? 127 : 126, stderr: err.message }));
    child.once('close', (code) => resolve({ code: code ?? 1, stderr }));
    child.stdin.on('error', () => {}); // a binary that exits early: its exit code tells
    child.stdin.end(stdin ?? '');
  });

/** Installs `set`: our chains filled (flushed first when they exist), the jumps into them added once. */
export async function applyRules(set: RuleSet, run: CommandRunner = runCommand): Promise<{ jumpsAdded: number }> {
  const missing: Rule[] = [];
  for (const jump of set.jumps) {
    const checked = await run('iptables', ['-w', '-t', 'nat', '-C', jump.chain, ...jump.args]);
    if (checked.code === 0) continue;
    // -C exits 1 for "no such rule"; on a first run our chain does not exist yet, which the nft backend reports as exit 2.
    if (checked.code === 1 || (checked.code !== 127 && /does not exist|no chain|couldn't load target/i.test(checked.stderr))) missing.push(jump);
    else throw failure('iptables', checked);
  }
  const restored = await run('iptables-restore', ['-w', '--noflush'], restoreText(set, missing));
  if (restored.code !== 0) throw failure('iptables-restore', restored);
  return { jumpsAdded: missing.length };
}

/** Removes the jumps into our chains and the chains; what is already gone is fine (cleanup is idempotent). */
export async function cleanupRules(set: RuleSet, run: CommandRunner = runCommand): Promise<{ removed: number }> {
  let removed = 0;
  for (const jump of set.jumps) {
    // A jump added twice by hand (or by an old version) is removed as many times as it is there.
    for (let i = 0; i < 16; i++) {
      const deleted = await run('iptables', ['-w', '-t', 'nat', '-D', jump.chain, ...jump.args]);
      if (deleted.code === 127) throw failure('iptables', deleted);
      if (deleted.code !== 0) break;
      removed++;
    }
  }
  // Flush all before deleting any: our chains jump to each other.
  for (const verb of ['-F', '-X']) {
    for (const chain of set.chains) {
      const done = await run('iptables', ['-w', '-t', 'nat', verb, chain]);
      if (done.code === 0) {
        if (verb === '-X') removed++;
        continue;
      }
      if (done.code === 127 || !/no chain|does not exist|not found/i.test(done.stderr)) throw failure('iptables', done);
    }
  }
  return { removed };
}

/**
 * Whether an interface other than loopback has a global IPv6 address: then
 * IPv6 connections would pass uncaptured (the rules are IPv4 only).
 */
export async function hasGlobalIpv6(file = '/proc/net/if_inet6'): Promise<boolean> {
  const text = await readFile(file, 'utf8').catch(() => '');
  // Columns: address, index, prefix length, scope (00 global), flags, interface.
  return text.split('\n').some((line) => {
    const cols = line.trim().split(/\s+/);
    return cols.length === 6 && cols[3] === '00' && cols[5] !== 'lo';
  });
}

function failure(command: string, result: CommandResult): IptablesError {
  if (result.code === 127) return new IptablesError(`${command} not found (install the iptables package; Debian's uses the nf_tables backend)`);
  const line =
    result.stderr
      .split('\n')
      .find((l) => l.trim() !== '')
      ?.trim() ?? `exit code ${result.code}`;
  const hint = /permission denied|you must be root|operation not permitted/i.test(line) ? ' (needs root or the NET_ADMIN capability)' : '';
  return new IptablesError(`${command} failed: ${line}${hint}`);
}
