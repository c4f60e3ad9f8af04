import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { eventually } from './eventually.ts';

/**
 * A port the OS says is free right now, for a child process that needs a number up front. Racy: any
 * connection on the machine may take it as its ephemeral port before the child binds it, so a
 * sidecar's own listeners take port 0 and report what they bound (`startSidecarProcess`).
 */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Polls a /live URL until it answers 200, or throws after `timeoutMs`. */
export async function waitForLive(url: string, timeoutMs: number): Promise<void> {
  await eventually(
    async () => {
      const res = await request(url, { signal: AbortSignal.timeout(1000) });
      await res.body.dump();
      return res.statusCode;
    },
    { until: (status) => status === 200, timeoutMs, intervalMs: 50, what: `${url} to be live` },
  );
}

/** The command users run: `node bin/meshgate.js ...`. */
export const MESHGATE_BIN = fileURLToPath(new URL('../../bin/meshgate.js', import.meta.url));

export interface RunningMeshgate {
  readonly child: ChildProcess;
  /** Every JSON line it wrote to stdout so far. */
  readonly logs: Array<Record<string, unknown>>;
  /** Its "listening" log line (ports, server id). */
  readonly listening: Record<string, unknown>;
  /** The last 20 kB of its stderr (a crash leaves its stack here). */
  stderr(): string;
  /** SIGKILL; resolves once it exited. */
  kill(): Promise<void>;
}

/**
 * `meshgate ARGS` as a long-running child process: resolves once it logged the line whose msg is
 * `listening`; rejects with its stderr when it exits first or is not there within `timeoutMs`
 * (30 s by default: a process start is seconds on an idle machine, far more on a busy one), and
 * then leaves no child behind.
 */
export async function spawnMeshgate(args: string[], opts: { listening: string; timeoutMs?: number; nodeArgs?: string[]; cwd?: string }): Promise<RunningMeshgate> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), MESHGATE_BIN, ...args], { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-20_000);
  });
  const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`meshgate ${args[0]}: no '${opts.listening}' line within ${timeoutMs} ms: ${stderr}`)), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`meshgate ${args[0]} exited with ${code}: ${stderr}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      logs.push(entry);
      if (entry.msg !== opts.listening) return;
      clearTimeout(timer);
      resolve(entry);
    });
  }).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  return {
    child,
    logs,
    listening,
    stderr: () => stderr,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
  };
}
