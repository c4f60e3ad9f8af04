import { Redis } from 'ioredis';
import type { Child, ProcessGroup } from './processes.ts';
import { findExecutable, freePorts } from './processes.ts';

/*
 * A throw-away redis-server for the global rate-limit rows: loopback only, no
 * persistence, in the bench's process group (stopped with the other children,
 * on Ctrl-C too). Ready when it logs "Ready to accept connections". Its INFO
 * counters say how deep auto-pipelining batched and what the script cost inside.
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

export interface RedisStats {
  /** Commands Redis executed (those a script runs count too), and read events it served them from. */
  readonly commands: number;
  readonly reads: number;
  /** Calls per read event: how many calls auto-pipelining put in one write (script calls when there were any, else commands). */
  readonly depth: number | undefined;
  /** The rate-limit script (EVALSHA; EVAL the first time on a connection). */
  readonly scriptCalls: number;
  /** Microseconds per script call inside Redis (INFO commandstats), I/O excluded. */
  readonly scriptUsPerCall: number | undefined;
}

async function withClient<T>(url: string, use: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true });
  try {
    await client.connect();
    return await use(client);
  } finally {
    client.disconnect();
  }
}

/** Zeroes INFO stats and commandstats, so the next redisStats covers what ran in between. */
export function resetRedisStats(url: string): Promise<void> {
  return withClient(url, async (client) => {
    await client.config('RESETSTAT');
  });
}

/** Since the last reset; our own INFO calls count as 2 commands and 2 reads, negligible. */
export function redisStats(url: string): Promise<RedisStats> {
  return withClient(url, async (client) => {
    const text = `${await client.info('stats')}\n${await client.info('commandstats')}`;
    const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(text)?.[1] ?? 0);
    const script = (name: string) => {
      const m = new RegExp(`^cmdstat_${name}:calls=(\\d+),usec=(\\d+)`, 'm').exec(text);
      return { calls: Number(m?.[1] ?? 0), usec: Number(m?.[2] ?? 0) };
    };
    const evalsha = script('evalsha');
    const evalFull = script('eval');
    const scriptCalls = evalsha.calls + evalFull.calls;
    return {
      commands: field('total_commands_processed'),
      reads: field('total_reads_processed'),
      depth: field('total_reads_processed') > 0 ? (scriptCalls > 0 ? scriptCalls : field('total_commands_processed')) / field('total_reads_processed') : undefined,
      scriptCalls,
      scriptUsPerCall: scriptCalls > 0 ? (evalsha.usec + evalFull.usec) / scriptCalls : undefined,
    };
  });
}

/** One line for a table's notes or a footnote. */
export function describeRedisStats(stats: RedisStats): string {
  const depth = stats.depth === undefined ? 'n/a' : stats.depth.toFixed(1);
  const script = stats.scriptUsPerCall === undefined ? '' : `, the script ${stats.scriptUsPerCall.toFixed(1)} µs per call inside Redis`;
  return `Redis: ${stats.scriptCalls.toLocaleString('en-US')} script calls, ${depth} per read (pipeline depth)${script}`;
}
