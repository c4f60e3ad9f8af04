import type { Logger } from 'pino';
import pino from 'pino';

export type { Logger };

/**
 * The process logger. Writes asynchronously so logging never blocks the event
 * loop; secrets are redacted by path as a second line of defence (the access
 * log never reads them in the first place).
 */
export function createLogger(opts: { level: string; name: string; destination?: NodeJS.WritableStream; sharedStdout?: boolean }): Logger {
  // sharedStdout: other processes write to the same stdout (a sidecar's workers). Each write then holds whole lines and at
  // most PIPE_BUF (4096) bytes, which a pipe never interleaves with another process's write: no line is cut by another's.
  const stream = opts.destination ?? pino.destination({ sync: false, ...(opts.sharedStdout ? { maxWrite: 4096 } : {}) });
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
