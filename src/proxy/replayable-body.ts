import type { Readable } from 'node:stream';
import { PassThrough } from 'node:stream';

export interface ReplayableBody {
  /** A fresh stream for the next attempt: what was recorded so far, then the live rest. */
  reader(): Readable;
  /** True while every byte so far is recorded, so another attempt can be made. */
  replayable(): boolean;
}

/**
 * Forwards a request body while keeping a copy up to `limit` bytes, so a failed
 * attempt can be replayed to another endpoint without buffering the whole body
 * before the first attempt (which would stall streaming gRPC calls). Bodies
 * larger than the limit stream on and are simply no longer retryable.
 */
export function createReplayableBody(source: Readable, limit: number): ReplayableBody {
  let chunks: Buffer[] = [];
  let recorded = 0;
  let overflow = false;
  let ended = false;
  let failure: Error | undefined;
  let current: PassThrough | undefined;

  const onDrain = (): void => {
    source.resume();
  };

  source.on('data', (chunk: Buffer) => {
    if (!overflow) {
      recorded += chunk.length;
      if (recorded > limit) {
        overflow = true;
        chunks = [];
      } else {
        chunks.push(chunk);
      }
    }
    if (current && !current.destroyed && !current.write(chunk)) {
      source.pause();
      current.once('drain', onDrain);
    }
  });
  source.once('end', () => {
    ended = true;
    if (current && !current.destroyed) current.end();
  });
  source.once('error', (err) => {
    failure = err;
    current?.destroy(err);
  });

  return {
    reader() {
      if (current) {
        current.off('drain', onDrain);
        if (!current.destroyed) current.destroy();
      }
      const next = new PassThrough();
      current = next;
      for (const chunk of chunks) next.write(chunk);
      if (failure) next.destroy(failure);
      else if (ended) next.end();
      if (source.isPaused() && !ended) source.resume();
      return next;
    },
    replayable: () => !overflow && failure === undefined,
  };
}
