import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { main } from '../../src/cli/main.ts';
import { MESHGATE_BIN } from './process.ts';

export interface CliResult {
  /** null when the child was killed (a hang past its timeout): it fails every expectation of an exit code. */
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

const execFileP = promisify(execFile);

/**
 * `meshgate ARGS` in a child process, to completion: for what only the real
 * process shows (bin/meshgate.js exiting while a role still holds a listener,
 * a signal, a working directory). Everything else is faster in process.
 */
export async function meshgateChild(args: string[], opts: { cwd?: string; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const child = execFileP(process.execPath, [MESHGATE_BIN, ...args], { timeout: opts.timeoutMs ?? 20_000, cwd: opts.cwd, maxBuffer: 16 * 1024 * 1024 });
  child.child.stdin?.end(opts.input);
  try {
    const { stdout, stderr } = await child;
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number | string | null; stdout: string; stderr: string };
    return { code: typeof e.code === 'number' ? e.code : null, stdout: e.stdout, stderr: e.stderr };
  }
}

/**
 * `meshgate ARGS` in this process: main()'s exit code and what it wrote to
 * stdout and stderr. For commands that return (usage errors, offline tools),
 * not for a role that starts and runs until a signal.
 */
export async function meshgateInProcess(args: string[]): Promise<CliResult> {
  const out = { stdout: '', stderr: '' };
  const writes = { stdout: process.stdout.write, stderr: process.stderr.write };
  const capture = (stream: 'stdout' | 'stderr') =>
    ((chunk: string | Uint8Array, ...rest: unknown[]): boolean => {
      out[stream] += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
      const done = rest.find((arg) => typeof arg === 'function') as (() => void) | undefined;
      done?.();
      return true;
    }) as typeof process.stdout.write;
  process.stdout.write = capture('stdout');
  process.stderr.write = capture('stderr');
  try {
    const code = await main(args);
    return { code, ...out };
  } finally {
    process.stdout.write = writes.stdout;
    process.stderr.write = writes.stderr;
  }
}
