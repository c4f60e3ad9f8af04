import { randomFillSync } from 'node:crypto';
import type { IdGenerator } from '@opentelemetry/sdk-trace';

/** Random bytes fetched per refill: 256 span IDs' worth, one getrandom(2) each time. */
const POOL_BYTES = 2048;

/**
 * Trace and span IDs for one role's tracing, hex from a pool of random bytes
 * refilled in blocks (the SDK's generator calls Math.random per 4 bytes and
 * copies through a shared buffer on every ID; this is one hex slice).
 *
 * It is also the SDK's IdGenerator, so that a root span the call path has
 * already sampled by its trace ID (call-spans.ts) gets that very ID:
 * `adoptTraceId` hands the SDK the next trace ID it asks for.
 */
export interface TraceIds extends IdGenerator {
  /** 32 lowercase hex digits, never all zero. */
  traceId(): string;
  /** 16 lowercase hex digits, never all zero. */
  spanId(): string;
  /** The next generateTraceId() returns `traceId` (once; undefined withdraws it); the caller starts its span right after. */
  adoptTraceId(traceId: string | undefined): void;
}

export function createTraceIds(): TraceIds {
  const pool = Buffer.allocUnsafe(POOL_BYTES);
  let offset = POOL_BYTES;
  let adopted: string | undefined;
  const hex = (bytes: number): string => {
    for (;;) {
      if (offset + bytes > POOL_BYTES) {
        randomFillSync(pool);
        offset = 0;
      }
      const start = offset;
      offset += bytes;
      // All zero is invalid in W3C trace context; 2^-64 at most, so draw again.
      for (let i = start; i < offset; i++) if (pool[i] !== 0) return pool.toString('hex', start, offset);
    }
  };
  const traceId = (): string => hex(16);
  const spanId = (): string => hex(8);
  return {
    traceId,
    spanId,
    adoptTraceId(id) {
      adopted = id;
    },
    generateTraceId() {
      const id = adopted ?? traceId();
      adopted = undefined;
      return id;
    },
    generateSpanId: spanId,
  };
}
