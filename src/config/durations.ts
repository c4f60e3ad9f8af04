import { z } from 'zod';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration written as `250ms`, `5s`, `2m`, `1h`; parsed to milliseconds. */
export const duration = z
  .string({ error: 'expected a duration like 250ms, 5s, 2m or 1h' })
  .regex(/^\d+(\.\d+)?(ms|s|m|h)$/, 'expected a duration like 250ms, 5s, 2m or 1h')
  .transform((text) => {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text)!;
    return Math.round(Number(match[1]) * UNIT_MS[match[2]!]!);
  });

/** A size written as `512`, `64KiB`, `10MiB`; parsed to bytes. */
export const byteSize = z.union([
  z.number().int().nonnegative(),
  z
    .string()
    .regex(/^\d+(KiB|MiB|GiB)?$/, 'expected a size like 65536, 64KiB or 10MiB')
    .transform((text) => {
      const match = /^(\d+)(KiB|MiB|GiB)?$/.exec(text)!;
      const scale = match[2] === 'KiB' ? 1024 : match[2] === 'MiB' ? 1024 ** 2 : match[2] === 'GiB' ? 1024 ** 3 : 1;
      return Number(match[1]) * scale;
    }),
]);
