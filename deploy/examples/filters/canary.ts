import type { Call, Verdict } from 'meshgate/filter';

/*
 * A canary tag for the app: a stable share of users (by a hash of their id)
 * and anyone who opts in get `x-canary: 1` on the request the app receives,
 * so the app can switch a feature on for them. Any x-canary the caller sent
 * is dropped first: only this check sets it.
 */

interface Config {
  /** Header naming the user. */
  readonly userHeader: string;
  /** Percent of users in the canary, 0 to 100. */
  readonly percent: number;
  /** Header a tester sets to 1 to be in the canary regardless. */
  readonly optInHeader: string;
}

/** FNV-1a, 32 bits: the same user lands in the same bucket on every call and every sidecar. */
function bucketOf(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % 100;
}

export default function check(call: Call, config: Config): Verdict {
  const user = call.headers[config.userHeader];
  const inCanary = call.headers[config.optInHeader] === '1' || (user !== undefined && bucketOf(user) < config.percent);
  return inCanary ? { headers: { set: { 'x-canary': '1' } } } : { headers: { remove: ['x-canary'] } };
}
