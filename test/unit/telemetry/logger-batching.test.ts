import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/*
 * The process logger batches its writes (telemetry/logger.ts). What an
 * operator relies on: a quiet process still gets its line out promptly, and
 * nothing written before an exit is lost. Each case runs with stdout as a
 * container runtime gives it (a pipe: telemetry/stdout-pipe.ts writes it)
 * and as node:child_process gives it (a socket: sonic-boom writes it).
 */
const LOGGER = fileURLToPath(new URL('../../../src/telemetry/logger.ts', import.meta.url));

type Stdout = 'pipe' | 'socket';
const KINDS: readonly Stdout[] = ['pipe', 'socket'];

/** A Node child running `script`; with 'pipe', its stdout is a pipe into `cat` (whose own stdout is ours). */
function spawnNode(stdout: Stdout, nodeArgs: string[], stderr: 'inherit' | 'pipe', consumer = 'cat'): ChildProcess {
  if (stdout === 'socket') return spawn(process.execPath, nodeArgs, { stdio: ['ignore', 'pipe', stderr], detached: true });
  // pipefail: the exit code is node's, not the consumer's.
  return spawn('bash', ['-c', `set -o pipefail; "$@" | ${consumer}`, 'bash', process.execPath, ...nodeArgs], { stdio: ['ignore', 'pipe', stderr], detached: true });
}

function runChild(script: string, stdout: Stdout): { lines: string[]; firstLine: Promise<number>; exited: Promise<void>; kill: () => void; started: number } {
  const child = spawnNode(stdout, ['--input-type=module', '-e', script], 'inherit');
  const lines: string[] = [];
  const started = performance.now();
  let pending = '';
  const firstLine = new Promise<number>((resolve) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      lines.push(...parts);
      if (lines.length > 0) resolve(performance.now() - started);
    });
  });
  const exited = once(child, 'exit').then(() => undefined);
  // The whole process group: with a pipe, node is bash's child.
  return { lines, firstLine, exited, kill: () => process.kill(-child.pid!, 'SIGKILL'), started };
}

describe.each(KINDS)('process logger batching, stdout a %s', (stdout) => {
  it('a lone line reaches stdout without waiting for the batch to fill', async () => {
    const child = runChild(
      `import { createLogger } from ${JSON.stringify(LOGGER)};
      const log = createLogger({ level: 'info', name: 't' });
      log.info('lone line');
      setInterval(() => {}, 1000);`,
      stdout,
    );
    try {
      const after = await child.firstLine;
      expect(JSON.parse(child.lines[0]!).msg).toBe('lone line');
      // The start of a Node child takes part of this; the flush interval is 100 ms.
      expect(after).toBeLessThan(5000);
    } finally {
      child.kill();
    }
  });

  it('every line written before process.exit() is on stdout, in order', async () => {
    const child = runChild(
      `import { createLogger } from ${JSON.stringify(LOGGER)};
      const log = createLogger({ level: 'info', name: 't' });
      for (let i = 0; i < 500; i++) log.info({ i }, 'line');
      process.exit(3);`,
      stdout,
    );
    await child.exited;
    expect(child.lines.map((l) => JSON.parse(l).i)).toEqual(Array.from({ length: 500 }, (_, i) => i));
  });
});

// Shared: every write at most PIPE_BUF bytes, so a backlog drains in many small chunks.
const BOUND_CASES: ReadonlyArray<{ stdout: Stdout; shared: boolean }> = [
  { stdout: 'pipe', shared: false },
  { stdout: 'pipe', shared: true },
  { stdout: 'socket', shared: false },
];

describe.each(BOUND_CASES)('process logger bound, stdout a $stdout, shared $shared', ({ stdout, shared }) => {
  it('drops lines instead of holding them when nobody reads stdout, and counts every line it drops', async () => {
    // ~90 MB of lines into a pipe nobody reads: only the bound (16 MiB) may stay in the heap.
    const child = spawnNode(
      stdout,
      [
        // gc() before measuring: the bound is on what is held, not on garbage not collected yet.
        '--expose-gc',
        '--input-type=module',
        '-e',
        `import { createLogger, createLogDrops } from ${JSON.stringify(LOGGER)};
        const drops = createLogDrops();
        const log = createLogger({ level: 'info', name: 't', drops: drops.add, sharedStdout: ${shared} });
        const filler = 'x'.repeat(250);
        const before = process.memoryUsage().heapUsed;
        for (let round = 0; round < 30; round++) {
          for (let i = 0; i < 10000; i++) log.info({ filler, round, i }, 'line');
          await new Promise((resolve) => setImmediate(resolve));
        }
        globalThis.gc?.();
        process.stderr.write(JSON.stringify({ grewMiB: (process.memoryUsage().heapUsed - before) / 1048576, dropped: drops.lines() }) + '\\n');
        // As a role's stop does: wait for the writes, the one in flight included (process.exit alone would cut it off).
        log.flush(() => process.exit(0));`,
      ],
      'pipe',
    );
    let received = 0;
    const ended = once(child.stdout!, 'end');
    child.stdout!.on('data', (chunk: Buffer) => {
      for (const byte of chunk) if (byte === 10) received++;
    });
    child.stdout!.pause(); // nobody reads: the pipe fills, then the logger's own buffer
    let err = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      err += chunk.toString('utf8');
      // Measured: now read, so the exit's synchronous flush of what is left can finish.
      if (err.includes('\n')) child.stdout!.resume();
    });
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
    await ended;
    const { grewMiB, dropped } = JSON.parse(err.trim().split('\n').at(-1)!) as { grewMiB: number; dropped: number };
    expect(grewMiB).toBeLessThan(40);
    // Every line either reached stdout or was counted as dropped (meshgate_log_lines_dropped_total).
    expect(dropped).toBeGreaterThan(0);
    expect(received + dropped).toBe(300_000);
  }, 30_000);
});

describe('process logger on a pipe whose reader is gone', () => {
  it('goes on without its log, and counts the lines it could not write', async () => {
    // `head` reads the first KiB and exits: every later write finds the pipe closed (EPIPE).
    const child = spawnNode(
      'pipe',
      [
        '--input-type=module',
        '-e',
        `import { createLogger, createLogDrops } from ${JSON.stringify(LOGGER)};
        const drops = createLogDrops();
        const log = createLogger({ level: 'info', name: 't', drops: drops.add });
        const filler = 'x'.repeat(200);
        for (let round = 0; round < 40; round++) {
          for (let i = 0; i < 250; i++) log.info({ filler, round, i }, 'line');
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        process.stderr.write(JSON.stringify({ dropped: drops.lines() }) + '\\n');
        log.flush(() => process.exit(0));`,
      ],
      'pipe',
      'head -c 1024 >/dev/null',
    );
    let err = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      err += chunk.toString('utf8');
    });
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
    const { dropped } = JSON.parse(err.trim().split('\n').at(-1)!) as { dropped: number };
    // Most of the 10 000 lines came after the reader left; each is counted (meshgate_log_lines_dropped_total).
    expect(dropped).toBeGreaterThan(5_000);
    expect(dropped).toBeLessThanOrEqual(10_000);
  }, 30_000);
});

describe('process logger on a pipe shared with other processes (a sidecar and its workers)', () => {
  it('never lets another process cut into a line', async () => {
    const writer = `import { createLogger } from ${JSON.stringify(LOGGER)};
      const log = createLogger({ level: 'info', name: 't', sharedStdout: true });
      for (let round = 0; round < 40; round++) {
        // Lines of different lengths, so batches do not line up by chance.
        for (let i = 0; i < 500; i++) log.info({ filler: 'y'.repeat((i * 37) % 900), pid: process.pid, round, i }, 'line');
        await new Promise((resolve) => setImmediate(resolve));
      }
      log.flush(() => process.exit(0));`;
    // Two writers on one pipe: a write of more than PIPE_BUF bytes may be split and interleaved with the other's.
    const child = spawn('bash', ['-c', `set -o pipefail; ( "$0" --input-type=module -e "$1" & "$0" --input-type=module -e "$1" & wait ) | cat`, process.execPath, writer], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let text = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      text += chunk;
    });
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
    const lines = text.trimEnd().split('\n');
    const broken = lines.filter((line) => {
      try {
        JSON.parse(line);
        return false;
      } catch {
        return true;
      }
    });
    expect(broken).toEqual([]);
    expect(lines).toHaveLength(40_000);
  }, 30_000);
});

describe.skipIf(process.platform !== 'linux')('process logger on a pipe, busy', () => {
  it('writes a busy log in few large writes, each of which wakes the reader', async () => {
    // 2 000 lines of ~330 bytes (an access log's size); the child counts the writes its logger makes
    // to its own descriptor of the pipe (the one stdout-pipe.ts opens, above 2).
    const child = runChild(
      `import { createLogger } from ${JSON.stringify(LOGGER)};
      const fs = process.getBuiltinModule('node:fs');
      const writeSync = fs.writeSync;
      let writes = 0;
      fs.writeSync = (fd, ...rest) => {
        if (fd > 2) writes++;
        return writeSync(fd, ...rest);
      };
      const log = createLogger({ level: 'info', name: 't' });
      const filler = 'z'.repeat(250);
      for (let round = 0; round < 20; round++) {
        // A busy sidecar's pace: ~33 KB of lines between two turns of its event loop, which the reader keeps up with.
        for (let i = 0; i < 100; i++) log.info({ filler, round, i }, 'line');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      log.flush(() => {
        log.info({ writes }, 'counted');
        log.flush(() => process.exit(0));
      });`,
      'pipe',
    );
    await child.exited;
    const entries = child.lines.map((line) => JSON.parse(line) as { msg: string; writes?: number });
    expect(entries.filter((entry) => entry.msg === 'line')).toHaveLength(2000);
    const made = entries.find((entry) => entry.msg === 'counted')?.writes;
    // ~660 KB: two writes of 16 KB per round (40); in 4 KB writes, eight (160).
    expect(made).toBeGreaterThan(0);
    expect(made).toBeLessThan(80);
  });
});

describe.skipIf(process.platform !== 'linux')('process logger on a pipe, idle', () => {
  it('sets no timer once its lines are out: a waiting process is not woken for its log', async () => {
    // The child counts its own main-thread wake-ups over a second after its last line left.
    const child = runChild(
      `import { readFileSync } from 'node:fs';
      import { createLogger } from ${JSON.stringify(LOGGER)};
      const wakeups = () => Number(/^voluntary_ctxt_switches:\\s+(\\d+)$/m.exec(readFileSync('/proc/thread-self/status', 'utf8'))[1]);
      const log = createLogger({ level: 'info', name: 't' });
      log.info('the only line');
      setTimeout(() => {
        const before = wakeups();
        setTimeout(() => {
          log.info({ wakeups: wakeups() - before }, 'idle second');
        }, 1000);
      }, 300);`,
      'pipe',
    );
    await child.exited;
    const idle = child.lines.map((line) => JSON.parse(line) as { msg: string; wakeups?: number }).find((entry) => entry.msg === 'idle second');
    // A flush timer every 100 ms would add ~10.
    expect(idle?.wakeups).toBeLessThan(5);
  });
});
