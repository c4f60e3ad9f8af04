import { Writable } from 'node:stream';
import type { Logger } from '../../src/telemetry/logger.ts';
import { createLogger } from '../../src/telemetry/logger.ts';

export interface CapturedLogs {
  readonly logger: Logger;
  /** Each JSON line written so far, parsed. */
  readonly lines: Array<Record<string, unknown>>;
  /** Resolves once every line logged before the call is in `lines` (an empty write's callback runs after those before it). */
  flushed(): Promise<void>;
}

/** A logger (default level info) whose lines the test reads; `into` collects them in an array the test already holds. */
export function captureLogs(opts: { level?: string; name?: string; into?: Array<Record<string, unknown>> } = {}): CapturedLogs {
  const lines = opts.into ?? [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return {
    logger: createLogger({ level: opts.level ?? 'info', name: opts.name ?? 'test', destination: sink }),
    lines,
    flushed: () => new Promise<void>((resolve) => sink.write('', () => resolve())),
  };
}
