import { z } from 'zod';
import { duration as durationText, byteSize as sizeText } from './durations.ts';

/*
 * Schema pieces that the sidecar config and policy documents share, so one
 * field means one thing in both (e.g. a route written in a sidecar's
 * services[].routes or in a Route document).
 *
 * Durations and sizes accept their text form and the number they parse to
 * (milliseconds, bytes), so a parsed document validates again to itself: the
 * sidecar re-validates what the policy server validated.
 */

/** A duration (`250ms`, `30s`, `2m`, `1h`) or an integer number of milliseconds; parsed to milliseconds. */
export const duration = z.union([z.number().int().nonnegative(), durationText], {
  error: 'expected a duration like 250ms, 5s, 2m or 1h (or milliseconds as an integer)',
});

/** A size (`65536`, `64KiB`, `10MiB`); parsed to bytes. */
export const byteSize = z.union(sizeText.options, { error: 'expected a size like 65536, 64KiB or 10MiB' });

/** `name` or `name.namespace`, each a DNS label. */
export const serviceRef = z
  .string()
  .max(127)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$/, 'expected a service as name or name.namespace (DNS labels)');

export const httpMethod = z
  .string()
  .toUpperCase()
  .regex(/^[A-Z]+$/, 'expected an HTTP method like GET or POST');

/** Lower-cased, as HTTP/2 and Node present header names. */
export const headerName = z
  .string()
  .min(1)
  .max(256)
  .toLowerCase()
  .regex(/^[a-z0-9!#$%&'*+.^_`|~-]+$/, 'expected an HTTP header name');
