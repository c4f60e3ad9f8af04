import type { Call, Verdict } from 'meshgate/filter';

/*
 * Request signatures: the caller signs `METHOD\nPATH\nQUERY\nTIMESTAMP` with
 * HMAC-SHA256 under a shared key and sends x-timestamp (Unix seconds) and
 * x-signature (lower-case hex). A call with a bad or missing signature, or a
 * timestamp outside the window (a replayed request), is denied. The body is
 * not signed: checks run before the body is read.
 *
 * The HMAC is the host's (`meshgate.hmacSha256`, node:crypto): the one
 * capability the sandbox gives a check, a pure function. Written out in plain
 * JavaScript it works too (bench/fixtures/hmac-signature-plain-js.ts) but
 * costs ~500 us a call in QuickJS's interpreter, against a few here.
 *
 * Key: a file of the sidecar's `userFilters.secretsDir` (a mounted Kubernetes
 * Secret), named by `config.keySecret` and listed in the document's
 * `spec.secrets`: `meshgate.hmacSha256Secret` signs with it on the host, so
 * the key is never in the policy nor in the sandbox, and a rotated Secret is
 * used within seconds. `config.key` (hex) puts the key in the policy instead:
 * whoever reads the policy (its folder, the admin API, a sidecar's
 * /config_dump) reads it.
 */

interface Config {
  /** The key's file name in the sidecar's userFilters.secretsDir (listed in spec.secrets). */
  readonly keySecret?: string;
  /** Or the shared key itself, hex, in the policy. */
  readonly key?: string;
  /** Seconds a signature stays valid either side of now. */
  readonly windowSeconds: number;
}

/** Compares in time independent of where the strings differ. */
function sameText(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length && i < b.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

export default function check(call: Call, config: Config): Verdict {
  const timestamp = call.headers['x-timestamp'];
  const signature = call.headers['x-signature'];
  if (timestamp === undefined || signature === undefined) return { deny: { code: 'signature_missing', reason: 'x-timestamp and x-signature are required' } };
  if (!/^\d{1,12}$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > config.windowSeconds) {
    return { deny: { code: 'signature_expired', reason: 'x-timestamp is outside the signature window' } };
  }
  const signed = `${call.method}\n${call.path}\n${call.query}\n${timestamp}`;
  const expected = config.keySecret !== undefined ? meshgate.hmacSha256Secret(config.keySecret, signed) : meshgate.hmacSha256(config.key ?? '', signed);
  if (!sameText(signature.toLowerCase(), expected)) return { deny: { code: 'signature_invalid', reason: 'the request signature does not verify' } };
  return { allow: true };
}
