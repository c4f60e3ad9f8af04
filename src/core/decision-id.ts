import type { Random } from './clock.ts';

const CHUNK = 36 ** 6;

/**
 * Short ids for policy decisions (authz, rate limits, validation): 12 base-36 characters (about 62 bits)
 * from the injected random source, so tests can fake them. Not a secret; long
 * enough that two decisions in one log never share an id.
 */
export function createDecisionIds(random: Random): () => string {
  const chunk = (): string =>
    Math.floor(random() * CHUNK)
      .toString(36)
      .padStart(6, '0');
  return () => chunk() + chunk();
}
