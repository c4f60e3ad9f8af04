import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';

/*
 * Network namespaces for tests that need real iptables rules: created with a
 * fixed prefix and a random suffix, so a crashed earlier run's leftovers can
 * be swept by prefix and two runs never collide. Nothing here touches the
 * host's own namespace: bridges live in a namespace of their own.
 */

const PATH = `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/sbin:/sbin`;

export interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion; never throws for a non-zero exit. */
export function run(command: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { env: { ...process.env, PATH }, timeout: opts.timeoutMs ?? 15_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 127) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    child.stdin?.on('error', () => {}); // a command that exits without reading its input
    child.stdin?.end(opts.input ?? '');
  });
}

/** Runs a command and throws with its stderr when it fails. */
export async function must(command: string, args: readonly string[], input?: string): Promise<string> {
  const res = await run(command, args, { input });
  if (res.code !== 0) throw new Error(`${command} ${args.join(' ')}: exit ${res.code}: ${res.stderr.trim()}`);
  return res.stdout;
}

/** Why network-namespace tests cannot run here, or undefined when they can. */
export async function netnsUnavailable(tools: readonly string[] = ['iptables']): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not root';
  const probe = `mgprobe-${randomBytes(3).toString('hex')}`;
  const added = await run('ip', ['netns', 'add', probe]);
  if (added.code !== 0) return `ip netns unavailable (${added.stderr.trim() || `exit ${added.code}`})`;
  await run('ip', ['netns', 'del', probe]);
  for (const tool of tools) {
    if ((await run('sh', ['-c', `command -v ${tool}`])).code !== 0) return `${tool} not installed`;
  }
  return undefined;
}

/** A unique name: prefix + random hex (namespace and interface names stay under 15 characters). */
export function uniqueName(prefix: string): string {
  return `${prefix}${randomBytes(3).toString('hex')}`;
}

/**
 * Deletes every namespace (and its /etc/netns folder) whose name starts with
 * `prefix` and that is older than `minAgeMs`: leftovers of a crashed run. The
 * age keeps a run from sweeping the namespaces of another run going on now.
 */
export async function sweepNetns(prefix: string, minAgeMs = 0): Promise<string[]> {
  const listed = await run('ip', ['netns', 'list']);
  const names = listed.stdout
    .split('\n')
    .map((line) => line.split(' ')[0]!)
    .filter((name) => name.startsWith(prefix));
  const swept: string[] = [];
  for (const name of names) {
    const made = await stat(`/run/netns/${name}`).then(
      (s) => s.mtimeMs,
      () => 0,
    );
    if (Date.now() - made < minAgeMs) continue;
    await deleteNetns(name);
    swept.push(name);
  }
  return swept;
}

export async function createNetns(name: string, hosts?: string): Promise<void> {
  await must('ip', ['netns', 'add', name]);
  await must('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  if (hosts !== undefined) {
    // `ip netns exec` bind-mounts /etc/netns/NAME/hosts over /etc/hosts for what it runs.
    await mkdir(`/etc/netns/${name}`, { recursive: true });
    await writeFile(`/etc/netns/${name}/hosts`, `127.0.0.1 localhost\n${hosts}`);
  }
}

export async function deleteNetns(name: string): Promise<void> {
  // Processes still inside keep the namespace alive, but its interfaces and rules go with the last of them.
  await run('ip', ['netns', 'del', name]);
  await rm(`/etc/netns/${name}`, { recursive: true, force: true });
}

/** Runs a command inside namespace `ns`. */
export function runIn(ns: string, command: string, args: readonly string[], opts: { input?: string } = {}): Promise<Run> {
  return run('ip', ['netns', 'exec', ns, command, ...args], opts);
}
