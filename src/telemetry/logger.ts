import type { Logger } from 'pino';
import pino from 'pino';

export type { Logger };

/**
 * The process logger. Writes asynchronously so logging never blocks the event
 * loop; secrets are redacted by path as a second line of defence (the access
 * log never reads them in the first place).
 */
export function createLogger(opts: { level: string; name: string; destination?: NodeJS.WritableStream }): Logger {
  const stream = opts.destination ?? pino.destination({ sync: false });
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
