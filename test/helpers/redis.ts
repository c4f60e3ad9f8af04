import type { ChildProcess } from 'node:child_process';
import { spawn, spawnSync } from 'node:child_process';
import { freePort } from './process.ts';

/*
 * A real redis-server on a loopback port for the tests of global rate limits.
 * CI installs it (.ci/run); on a developer machine without it the tests say
 * they were skipped, and in CI (CI=true) a missing server is a failure.
 */

const redisServerAvailable = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;

export function redisSkipReason(): string | undefined {
  if (redisServerAvailable) return undefined;
  if (process.env.CI) throw new Error('redis-server is not installed; .ci/run installs it (apt-get install -y redis-server)');
  return 'skipped: redis-server is not installed (apt-get install -y redis-server)';
}

export interface TestRedis {
  readonly port: number;
  readonly url: string;
  /** Kills the server (SIGKILL: an outage, not a shutdown) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port, empty. */
  start(): Promise<void>;
  /** SIGSTOP: the port still accepts connections and nothing is answered (a frozen or swapping Redis). */
  freeze(): void;
  /** SIGCONT: answers again, queued commands first. */
  thaw(): void;
}

export async function startTestRedis(): Promise<TestRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'notice'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    // The ready line (notice level) says the port accepts: no polling.
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const onData = (chunk: Buffer): void => {
        out += chunk.toString();
        if (out.includes('Ready to accept connections')) {
          proc.stdout!.off('data', onData);
          resolve();
        }
      };
      proc.stdout!.on('data', onData);
      proc.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
    });
    proc.stdout!.resume();
    proc.stderr!.resume();
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      const proc = child;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return; // killed by a signal: exitCode stays null
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGKILL');
      await exited;
    },
    start,
    freeze: () => void child?.kill('SIGSTOP'),
    thaw: () => void child?.kill('SIGCONT'),
  };
}
