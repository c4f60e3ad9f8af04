import type { ChildProcess } from 'node:child_process';
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import type { Server } from 'node:net';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/*
 * Every child process and temp dir of a bench run belongs to one group, so a
 * single call (or the exit hook) removes them all.
 *
 * Children are spawned `detached`, each in its own process group, and stopped
 * with a signal to the whole group: that reaches nginx workers and anything a
 * CLI forks, and a Ctrl-C in the terminal reaches only the harness, which then
 * stops the children in order.
 */

const OUTPUT_LIMIT = 256 * 1024;

export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  /** Settles when the child has exited; never rejects. */
  readonly exited: Promise<ChildExit>;
  readonly hasExited: () => boolean;
  readonly stdout: () => string;
  readonly stderr: () => string;
  /** SIGTERM to the group, SIGKILL after `graceMs`; resolves once exited (bounded). */
  readonly stop: (graceMs?: number) => Promise<void>;
}

interface SpawnOptions {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly cwd?: string;
  /** Adds an IPC channel: our Node children exit when it closes, so they die with the harness even on SIGKILL. */
  readonly ipc?: boolean;
  /** Called with each complete stdout line. */
  readonly onStdoutLine?: (line: string) => void;
  /**
   * stdout as a container runtime gives it, a pipe, rather than the socket node:child_process makes:
   * meshgate writes a pipe differently (src/telemetry/stdout-pipe.ts), and the bench measures the deployed path.
   */
  readonly pipeStdout?: boolean;
}

export interface ProcessGroup {
  readonly spawn: (options: SpawnOptions) => Child;
  readonly tempDir: (prefix: string) => string;
  readonly stopAll: (graceMs?: number) => Promise<void>;
  /** Synchronous last resort for the `exit` event: SIGKILL every group, remove temp dirs. */
  readonly killAllSync: () => void;
}

export function createProcessGroup(): ProcessGroup {
  const children = new Set<Child>();
  const tempDirs = new Set<string>();

  function spawnChild(options: SpawnOptions): Child {
    const pipe = options.pipeStdout ? makeStdoutFifo() : undefined;
    const stdio: ('ignore' | 'pipe' | 'ipc' | number)[] = ['ignore', pipe?.writeFd ?? 'pipe', 'pipe'];
    if (options.ipc) stdio.push('ipc');
    const proc = spawn(options.command, options.args, { cwd: options.cwd, stdio, detached: true });
    if (pipe) closeSync(pipe.writeFd); // the child holds the write end now: its exit ends the reader
    const stdout = pipe?.reader ?? proc.stdout;
    let out = '';
    let err = '';
    let pendingLine = '';
    let exitInfo: ChildExit | undefined;
    stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      if (out.length < OUTPUT_LIMIT) out += chunk;
      if (options.onStdoutLine) {
        pendingLine += chunk;
        let newline = pendingLine.indexOf('\n');
        while (newline !== -1) {
          options.onStdoutLine(pendingLine.slice(0, newline));
          pendingLine = pendingLine.slice(newline + 1);
          newline = pendingLine.indexOf('\n');
        }
      }
    });
    proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      if (err.length < OUTPUT_LIMIT) err += chunk;
    });
    const exited = new Promise<ChildExit>((resolve) => {
      proc.once('error', (error) => {
        err += `spawn ${options.command}: ${error.message}\n`;
        exitInfo = { code: null, signal: null };
        resolve(exitInfo);
      });
      proc.once('exit', (code, signal) => {
        exitInfo = { code, signal };
        resolve(exitInfo);
      });
    });

    const child: Child = {
      name: options.name,
      process: proc,
      exited,
      hasExited: () => exitInfo !== undefined,
      stdout: () => out,
      stderr: () => err,
      stop: async (graceMs = 3000) => {
        if (exitInfo === undefined) {
          signalGroup(proc, 'SIGTERM');
          if (!(await settlesWithin(exited, graceMs))) {
            signalGroup(proc, 'SIGKILL');
            await settlesWithin(exited, 2000);
          }
        }
        // A group leader may be gone while its forks (nginx workers) live on.
        signalGroup(proc, 'SIGKILL');
        children.delete(child);
      },
    };
    children.add(child);
    // We never send on the IPC channel; it must not keep the harness alive.
    proc.channel?.unref();
    return child;
  }

  return {
    spawn: spawnChild,
    tempDir: (prefix) => {
      const dir = mkdtempSync(join(tmpdir(), prefix));
      tempDirs.add(dir);
      return dir;
    },
    stopAll: async (graceMs) => {
      await Promise.all([...children].map((c) => c.stop(graceMs)));
      removeTempDirs(tempDirs);
    },
    killAllSync: () => {
      for (const child of children) signalGroup(child.process, 'SIGKILL');
      children.clear();
      removeTempDirs(tempDirs);
    },
  };
}

function removeTempDirs(dirs: Set<string>): void {
  for (const dir of dirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // Best effort: a temp dir left behind must not hide the real result.
    }
  }
  dirs.clear();
}

function signalGroup(proc: ChildProcess, signal: NodeJS.Signals): void {
  if (proc.pid === undefined) return;
  try {
    process.kill(-proc.pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

/** True when `promise` settles within `ms`. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Free TCP ports on 127.0.0.1, chosen by the OS. All are held open until every
 * one is chosen, so one call never returns the same port twice; another process
 * may still take one before our child binds it (rare on a quiet machine).
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
      const address = server.address();
      if (address === null || typeof address === 'string') throw new Error('no TCP address');
      ports.push(address.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/** Absolute path of an executable on PATH (plus the sbin dirs, where Debian puts nginx), or undefined. */
export function findExecutable(name: string, pathEnv: string | undefined): string | undefined {
  const dirs = [...(pathEnv ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** First non-empty line of a child's stderr (then stdout), for one-line skip reasons. */
export function firstOutputLine(child: Child): string | undefined {
  for (const text of [child.stderr(), child.stdout()]) {
    const line = text.split('\n').find((l) => l.trim() !== '');
    if (line !== undefined) return line.trim().slice(0, 300);
  }
  return undefined;
}

export function describeExit(exit: ChildExit): string {
  return exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.code ?? 'unknown'}`;
}

/** A pipe for a child's stdout: a FIFO made and unlinked at once (Node has no pipe(2)), read here through its read end. */
function makeStdoutFifo(): { writeFd: number; reader: Socket } {
  const dir = mkdtempSync(join(tmpdir(), 'meshgate-stdout-'));
  try {
    const path = join(dir, 'stdout');
    const made = spawnSync('mkfifo', ['-m', '600', path], { encoding: 'utf8' });
    if (made.status !== 0) throw new Error(`mkfifo: ${made.stderr || made.error?.message}`);
    // The read end first, non-blocking: opening the write end then finds a reader and does not wait.
    const readFd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const writeFd = openSync(path, constants.O_WRONLY);
    return { writeFd, reader: new Socket({ fd: readFd, readable: true, writable: false }) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
