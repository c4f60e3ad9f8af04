import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/*
 * The process logger batches its writes (telemetry/logger.ts). What an
 * operator relies on: a quiet process still gets its line out promptly, and
 * nothing written before an exit is lost.
 */
const LOGGER = fileURLToPath(new URL('../../../src/telemetry/logger.ts', import.meta.url));

function runChild(script: string): { lines: string[]; firstLine: Promise<number>; exited: Promise<void>; kill: () => void; started: number } {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const started = performance.now();
  let pending = '';
  const firstLine = new Promise<number>((resolve) => {
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      lines.push(...parts);
      if (lines.length > 0) resolve(performance.now() - started);
    });
  });
  const exited = once(child, 'exit').then(() => undefined);
  return { lines, firstLine, exited, kill: () => child.kill('SIGKILL'), started };
}

describe('process logger batching', () => {
  it('a lone line reaches stdout without waiting for the batch to fill', async () => {
    const child = runChild(`import { createLogger } from ${JSON.stringify(LOGGER)};
      const log = createLogger({ level: 'info', name: 't' });
      log.info('lone line');
      setInterval(() => {}, 1000);`);
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
    const child = runChild(`import { createLogger } from ${JSON.stringify(LOGGER)};
      const log = createLogger({ level: 'info', name: 't' });
      for (let i = 0; i < 500; i++) log.info({ i }, 'line');
      process.exit(3);`);
    await child.exited;
    expect(child.lines.map((l) => JSON.parse(l).i)).toEqual(Array.from({ length: 500 }, (_, i) => i));
  });
});

describe('process logger bound', () => {
  it('drops lines instead of holding them when nobody reads stdout, and counts every line it drops', async () => {
    // ~90 MB of lines into a pipe nobody reads: only the bound (16 MiB) may stay in the heap.
    const child = spawn(
      process.execPath,
      [
        // gc() before measuring: the bound is on what is held, not on garbage not collected yet.
        '--expose-gc',
        '--input-type=module',
        '-e',
        `import { createLogger, createLogDrops } from ${JSON.stringify(LOGGER)};
        const drops = createLogDrops();
        const log = createLogger({ level: 'info', name: 't', drops: drops.add });
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
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let received = 0;
    const ended = once(child.stdout, 'end');
    child.stdout.on('data', (chunk: Buffer) => {
      for (const byte of chunk) if (byte === 10) received++;
    });
    child.stdout.pause(); // nobody reads: the pipe fills, then the logger's own buffer
    let err = '';
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString('utf8');
      // Measured: now read, so the exit's synchronous flush of what is left can finish.
      if (err.includes('\n')) child.stdout.resume();
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
