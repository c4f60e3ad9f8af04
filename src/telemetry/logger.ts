import type { Logger } from 'pino';
import pino from 'pino';
import type { StdoutPipe } from './stdout-pipe.ts';
import { countLines, openStdoutPipe } from './stdout-pipe.ts';

export type { Logger };

/**
 * The process logger. Writes asynchronously so logging never blocks the event
 * loop; secrets are redacted by path as a second line of defence (the access
 * log never reads them in the first place).
 *
 * Lines are batched: one write per ~16 KB (4 KB with sharedStdout) or per
 * FLUSH_INTERVAL_MS, whichever comes first, instead of one write per line.
 * On the mesh path (bench:mesh's two sidecars, access log on, 50
 * connections) batching at 4 KB cut the CPU per request by about a quarter
 * (~650 -> ~480 µs), and 16 KB instead of 4 KB by another 7-21%. A pipe (a
 * container's stdout) is written from the event loop without blocking
 * (./stdout-pipe.ts), anything else through sonic-boom's thread-pool writes.
 * The trade, like Envoy's access_log_flush_interval: a line reaches stdout up
 * to FLUSH_INTERVAL_MS late, and a SIGKILLed process loses at most that much;
 * a normal exit, a crash or process.exit() flushes synchronously (an exit hook:
 * stdout-pipe.ts's own, or sonic-boom's through pino).
 */
const FLUSH_INTERVAL_MS = 100;
/**
 * Lines waiting for stdout, at most: when whoever reads it (the container
 * runtime) stalls, later lines are dropped instead of piling up in the heap
 * until the sidecar is OOM-killed. 16 MiB is ~40 000 access-log lines, over
 * ten seconds of a busy sidecar's log.
 */
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
/** The most a pipe writes whole (Linux): with sharedStdout, every write is whole lines and at most this. */
const PIPE_BUF = 4096;
/**
 * Bytes that wait before a write: each write to a pipe wakes its reader (the container runtime),
 * which on a busy node takes the CPU from the writer. 16 000 (~50 access-log lines) instead of
 * 4 000: a quarter of the writes and wake-ups (bench/README.md, "The log's writes" has the paired
 * figures). Below sonic-boom's 16 KiB maxWrite, which its minLength must stay under.
 */
const BATCH_BYTES = 16_000;
// With sharedStdout every write must stay <= PIPE_BUF, and sonic-boom's minLength below its maxWrite.
const SHARED_BATCH_BYTES = 4000;
/** Log lines dropped because stdout was not read (MAX_BUFFERED_BYTES were waiting): meshgate_log_lines_dropped_total. */
export interface LogDrops {
  lines(): number;
}

export function createLogger(opts: { level: string; name: string; destination?: NodeJS.WritableStream; sharedStdout?: boolean; drops?: (lines: number) => void }): Logger {
  // sharedStdout: other processes write to the same stdout (a sidecar's workers). Each write then holds whole lines and at
  // most PIPE_BUF bytes, which a pipe never interleaves with another process's write: no line is cut by another's.
  let stream: NodeJS.WritableStream | ReturnType<typeof pino.destination> | StdoutPipe | undefined = opts.destination;
  const maxWrite = opts.sharedStdout ? PIPE_BUF : undefined;
  const batchBytes = opts.sharedStdout ? SHARED_BATCH_BYTES : BATCH_BYTES;
  if (!stream) {
    // A pipe (a container's stdout): written without the thread pool (./stdout-pipe.ts); anything else through sonic-boom.
    stream = openStdoutPipe({ batchBytes, flushIntervalMs: FLUSH_INTERVAL_MS, maxBufferedBytes: MAX_BUFFERED_BYTES, maxWrite, onDrop: opts.drops });
  }
  if (!stream) {
    const stdout = pino.destination({ sync: false, minLength: batchBytes, periodicFlush: FLUSH_INTERVAL_MS, maxLength: MAX_BUFFERED_BYTES, ...(maxWrite ? { maxWrite } : {}) });
    // A dropped write is whole lines (pino writes one line at a time); counted so a stalled log reader shows on a dashboard.
    const drops = opts.drops;
    if (drops) stdout.on('drop', (data: string | Buffer) => drops(countLines(data)));
    stream = stdout;
  }
  return pino(
    {
      name: opts.name,
      level: opts.level,
      base: { role: opts.name },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ['headers.authorization', 'headers.cookie', 'headers["proxy-authorization"]', '*.privateKey', '*.token'],
        censor: '[redacted]',
      },
    },
    stream,
  );
}

/** A counter of dropped log lines to hand createLogger, read by the role's metrics. */
export function createLogDrops(): LogDrops & { add(lines: number): void } {
  let dropped = 0;
  return {
    add: (lines) => {
      dropped += lines;
    },
    lines: () => dropped,
  };
}
