import type { Call, Verdict } from 'meshgate/filter';

/*
 * Revoked API keys: a call whose x-api-key (or the header the config names)
 * is on the list is denied. The list holds the keys' SHA-256 would be better
 * for a long-lived policy; this example keeps the keys' first 12 characters,
 * which identify a key without being one (keys here are longer than that).
 */

interface Config {
  readonly header: string;
  /** Prefixes of revoked keys. */
  readonly revoked: readonly string[];
}

export default function check(call: Call, config: Config): Verdict {
  const key = call.headers[config.header];
  if (key === undefined) return { allow: true };
  for (const prefix of config.revoked) {
    if (prefix.length >= 12 && key.startsWith(prefix)) return { deny: { status: 401, code: 'api_key_revoked', reason: 'this API key was revoked' } };
  }
  return { allow: true };
}
