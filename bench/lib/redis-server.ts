import { findExecutable, freePorts } from './processes.ts';
import type { Child, ProcessGroup } from './processes.ts';

/*
 * A throw-away redis-server for the global rate-limit rows: loopback only, no
 * persistence, in the bench's process group (stopped with the other children,
 * on Ctrl-C too). Ready when it logs "Ready to accept connections".
 */

export interface BenchRedis {
  readonly child: Child;
  readonly url: string;
  readonly version: string;
}

export type RedisStart = { readonly ok: true; readonly redis: BenchRedis } | { readonly ok: false; readonly reason: string };

export async function startRedisServer(group: ProcessGroup, pathEnv: string | undefined, deadlineMs: number): Promise<RedisStart> {
  const binary = findExecutable('redis-server', pathEnv);
  if (binary === undefined) return { ok: false, reason: 'redis-server not installed (apt-get install -y redis-server)' };
  const [port] = await freePorts(1);
  let version = 'unknown';
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    onReady = resolve;
  });
  const child = group.spawn({
    name: 'redis-server',
    command: binary,
    args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'notice', '--dir', group.tempDir('meshgate-bench-redis-')],
    onStdoutLine: (line) => {
      version = /Redis version=([^\s,]+)/.exec(line)?.[1] ?? version;
      if (line.includes('Ready to accept connections')) onReady();
    },
  });
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    ready.then(() => 'ready' as const),
    child.exited.then(() => 'exited' as const),
    new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), deadlineMs);
    }),
  ]);
  clearTimeout(timer);
  if (outcome !== 'ready') {
    await child.stop(500);
    const output = `${child.stderr()}${child.stdout()}`.trim().split('\n').at(-1) ?? '';
    return { ok: false, reason: `redis-server ${outcome === 'exited' ? 'exited' : `not ready after ${deadlineMs / 1000}s`}: ${output.slice(0, 200)}` };
  }
  return { ok: true, redis: { child, url: `redis://127.0.0.1:${port}`, version } };
}
