import { nodeFs as fs } from '../core/node-builtins.ts';

/**
 * stdout for the process logger when it is a pipe, as a container runtime
 * gives it: lines are batched and written from the event loop's own thread
 * with a non-blocking write(2), on an open file description of the pipe that
 * this process alone holds (opened again through /proc/self/fd/1, so the
 * O_NONBLOCK flag never reaches fd 1 itself, the CLI's own writes, or other
 * processes sharing the pipe).
 *
 * Why not pino.destination (sonic-boom): its asynchronous mode hands every
 * batch to libuv's thread pool (fs.write), a thread wake-up and a completion
 * round trip per write, and it recomputes the byte length of the growing
 * batch (flattening it) on every line. With the access log on, that was
 * ~9 µs of CPU per call of a sidecar (of ~15 µs for the whole access log);
 * a write the pipe can take straight away costs a fraction of a µs per line
 * here. A pipe that is full answers EAGAIN instead of blocking: lines wait,
 * bounded, and are retried; the event loop never blocks on a slow reader.
 * Other kinds of stdout (a file, a terminal, a socket) keep sonic-boom.
 */

export interface StdoutPipeOptions {
  /** Write once this many bytes wait (fewer writes, fewer wake-ups of the reader). */
  readonly batchBytes: number;
  /** ...or once the oldest waiting line is this old. */
  readonly flushIntervalMs: number;
  /** Bytes waiting, at most: a line that would go beyond is dropped and counted, never held. */
  readonly maxBufferedBytes: number;
  /**
   * Other processes write to the same pipe (a sidecar's workers): each write is whole lines and
   * at most this many bytes, which the kernel never interleaves with another's (PIPE_BUF).
   */
  readonly maxWrite: number | undefined;
  readonly onDrop?: ((lines: number) => void) | undefined;
}

export interface StdoutPipe {
  write(line: string): boolean;
  /** Calls back once every line written so far has reached the pipe (pino's logger.flush). */
  flush(done?: (err?: Error) => void): void;
  /** Writes what waits now, waiting for a full pipe a bounded time (the exit hook). */
  flushSync(): void;
}

/** How long a full pipe waits before the next try. */
const RETRY_MS = 10;
/** At exit, how long a full pipe is waited for before the rest is given up (a stalled reader must not hold a stopping pod). */
const EXIT_FLUSH_MS = 2_000;

/** A non-blocking writer on stdout when it is a pipe; undefined otherwise (the caller keeps its default). */
export function openStdoutPipe(opts: StdoutPipeOptions, fd = 1): StdoutPipe | undefined {
  let own: number;
  try {
    if (!fs.fstatSync(fd).isFIFO()) return undefined;
    own = fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch {
    return undefined; // no /proc, or no reader left: the default destination decides what to do
  }
  return createPipeWriter(own, opts);
}

function createPipeWriter(fd: number, opts: StdoutPipeOptions): StdoutPipe {
  // Lines waiting, from `head` on: taken by index, so draining a long backlog in PIPE_BUF chunks never shifts the arrays.
  let lines: string[] = [];
  let lineBytes: number[] = [];
  let head = 0;
  let waitingBytes = 0;
  /** The part of a chunk the pipe did not take yet. */
  let carry: Buffer | undefined;
  let retry: NodeJS.Timeout | undefined;
  /** The pipe failed for good (its reader closed it): every later line is dropped and counted. */
  let broken = false;
  let flushed: Array<(err?: Error) => void> = [];

  const drop = (count: number): void => {
    if (count > 0) opts.onDrop?.(count);
  };
  /** The next chunk to write: whole lines, at most maxWrite bytes when the pipe is shared (a longer line alone). */
  const nextChunk = (): Buffer | undefined => {
    if (carry) return carry;
    if (head === lines.length) return undefined;
    let end = lines.length;
    let bytes = waitingBytes;
    if (opts.maxWrite !== undefined) {
      end = head + 1;
      bytes = lineBytes[head]!;
      while (end < lines.length && bytes + lineBytes[end]! <= opts.maxWrite) bytes += lineBytes[end++]!;
    }
    const text = end === head + 1 ? lines[head]! : lines.slice(head, end).join('');
    head = end;
    waitingBytes -= bytes;
    if (head === lines.length) clearLines();
    else if (head > 1024 && head * 2 > lines.length) {
      // A backlog the pipe never quite drains: lines already written must not stay referenced.
      lines = lines.slice(head);
      lineBytes = lineBytes.slice(head);
      head = 0;
    }
    return Buffer.from(text, 'utf8');
  };
  const clearLines = (): void => {
    lines = [];
    lineBytes = [];
    head = 0;
  };
  const settleFlushes = (err?: Error): void => {
    if (flushed.length === 0 || (!err && (carry || head < lines.length))) return;
    const callbacks = flushed;
    flushed = [];
    for (const done of callbacks) process.nextTick(done, err);
  };
  const giveUp = (err: Error): void => {
    broken = true;
    drop(countLines(carry) + lines.length - head);
    carry = undefined;
    clearLines();
    waitingBytes = 0;
    settleFlushes(err);
  };
  /** Writes chunks until the pipe is full (then retries later) or nothing waits. */
  const drain = (): void => {
    if (retry !== undefined || broken) return;
    for (let chunk = nextChunk(); chunk; chunk = nextChunk()) {
      let written: number;
      try {
        written = fs.writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return giveUp(err as Error);
        written = 0;
      }
      if (written < chunk.length) {
        carry = chunk.subarray(written);
        // Ref'd: lines waiting for a full pipe keep the process until they leave, as sonic-boom's write in flight did.
        retry = setTimeout(() => {
          retry = undefined;
          drain();
        }, RETRY_MS);
        return;
      }
      carry = undefined;
    }
    settleFlushes();
  };
  let hooked = false;
  /** Armed while lines wait for their batch, so an idle process has no timer waking it up. */
  let flushTimer: NodeJS.Timeout | undefined;
  const onFlushTimer = (): void => {
    flushTimer = undefined;
    drain();
  };

  const pipe: StdoutPipe = {
    write(line) {
      if (!hooked) {
        // On the first line: a logger that never writes (level silent) adds no exit hook.
        hooked = true;
        process.once('exit', () => pipe.flushSync());
      }
      if (broken) {
        drop(1);
        return false;
      }
      const bytes = Buffer.byteLength(line);
      if (waitingBytes + (carry?.length ?? 0) + bytes > opts.maxBufferedBytes) {
        drop(1);
        return false;
      }
      lines.push(line);
      lineBytes.push(bytes);
      waitingBytes += bytes;
      if (waitingBytes >= opts.batchBytes) drain();
      // Unref'd: a quiet process is not kept alive for its log; the exit hook writes what waits.
      else if (flushTimer === undefined) flushTimer = setTimeout(onFlushTimer, opts.flushIntervalMs).unref();
      return true;
    },
    flush(done) {
      if (done) flushed.push(done);
      drain();
      if (broken) settleFlushes(new Error('stdout is closed'));
    },
    flushSync() {
      if (retry !== undefined) clearTimeout(retry);
      retry = undefined;
      const deadline = performance.now() + EXIT_FLUSH_MS;
      const pause = new Int32Array(new SharedArrayBuffer(4));
      while (!broken && (carry || head < lines.length)) {
        drain();
        if (retry === undefined) break;
        clearTimeout(retry);
        retry = undefined;
        if (performance.now() > deadline) {
          giveUp(new Error('stdout stayed full'));
          break;
        }
        Atomics.wait(pause, 0, 0, 1);
      }
    },
  };
  return pipe;
}

/** Whole lines in `data` (each ends with a newline): what a dropped write held, for the drop counter. */
export function countLines(data: string | Buffer | undefined): number {
  if (data === undefined) return 0;
  let count = 0;
  for (let at = data.indexOf('\n'); at !== -1; at = data.indexOf('\n', at + 1)) count++;
  return count;
}
