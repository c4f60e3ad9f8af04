import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/*
 * What counting request body bytes costs, per body chunk, measured in
 * process on the stream machinery alone (no sockets): a body of `chunks`
 * chunks pushed by a producer the way node:http's parser pushes them, read
 * by a consumer, with
 *   - no counting (the baseline),
 *   - the sidecar's way: the request's own `push` wrapped (src/proxy/request-bytes.ts),
 *   - the alternative it avoids: a counting PassThrough piped in between.
 */

export interface BytesCostResult {
  readonly chunkBytes: number;
  readonly chunks: number;
  /** Nanoseconds per chunk, median of the repetitions. */
  readonly plainNs: number;
  readonly wrappedPushNs: number;
  readonly passThroughNs: number;
}

function body(chunks: number, chunk: Buffer, wrap: boolean): { stream: Readable; counted: () => number } {
  let sent = 0;
  const stream = new Readable({
    read() {
      while (sent < chunks) {
        sent++;
        if (!this.push(chunk)) return;
      }
      this.push(null);
    },
  });
  let bytes = 0;
  if (wrap) {
    const push = stream.push;
    stream.push = function (this: Readable, c: unknown, encoding?: BufferEncoding): boolean {
      if (c !== null && c !== undefined) bytes += (c as Buffer).byteLength;
      return push.call(this, c, encoding);
    };
  }
  return { stream, counted: () => bytes };
}

function sink(): Writable {
  return new Writable({
    write(_chunk, _enc, done) {
      done();
    },
  });
}

async function once(mode: 'plain' | 'wrapped' | 'passthrough', chunks: number, chunk: Buffer): Promise<number> {
  const started = process.hrtime.bigint();
  if (mode === 'passthrough') {
    let bytes = 0;
    const counter = new PassThrough({
      transform(c: Buffer, _enc, done) {
        bytes += c.length;
        done(null, c);
      },
    });
    await pipeline(body(chunks, chunk, false).stream, counter, sink());
    if (bytes !== chunks * chunk.length) throw new Error('miscounted');
  } else {
    const { stream, counted } = body(chunks, chunk, mode === 'wrapped');
    await pipeline(stream, sink());
    if (mode === 'wrapped' && counted() !== chunks * chunk.length) throw new Error('miscounted');
  }
  return Number(process.hrtime.bigint() - started) / chunks;
}

export async function measureRequestBytesCost(opts: { chunkBytes?: number; chunks?: number; repetitions?: number } = {}): Promise<BytesCostResult> {
  const chunkBytes = opts.chunkBytes ?? 16 * 1024;
  const chunks = opts.chunks ?? 20_000;
  const repetitions = opts.repetitions ?? 7;
  const chunk = Buffer.alloc(chunkBytes, 1);
  const results: Record<'plain' | 'wrapped' | 'passthrough', number[]> = { plain: [], wrapped: [], passthrough: [] };
  // Interleaved, after a warm-up round, so JIT and GC weigh on every mode alike.
  for (let i = 0; i <= repetitions; i++) {
    for (const mode of ['plain', 'wrapped', 'passthrough'] as const) {
      const ns = await once(mode, chunks, chunk);
      if (i > 0) results[mode].push(ns);
    }
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  return { chunkBytes, chunks, plainNs: median(results.plain), wrappedPushNs: median(results.wrapped), passThroughNs: median(results.passthrough) };
}
