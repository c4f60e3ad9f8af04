import { createHash } from 'node:crypto';
import type { CallContext } from '../../core/call-context.ts';

/*
 * What a bucket is per: the rule's `key` parts read from the call, joined.
 * A part the call does not have (no peer certificate, no such header or
 * claim) is one shared value, so leaving a header out buys a caller nothing
 * but the bucket of everyone else who left it out.
 *
 * Keys that go to Redis are hashed: header values and claims (API keys,
 * e-mail addresses) never leave the sidecar, and every key has one size.
 */

export type KeyPart = (call: CallContext) => string;

/** Stands for a missing value; NUL never occurs in a header value, a claim string is JSON-quoted. */
const MISSING = '\u0000-';

function unwrapMapped(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

function claimText(value: unknown): string {
  if (value === undefined || value === null) return MISSING;
  if (typeof value === 'string') return value;
  // Lists and objects keyed by their JSON: ["a","b"] is its own bucket, not "a" or "b".
  return JSON.stringify(value);
}

/** How `source.ip` finds the client: the connection's peer, or x-forwarded-for through trusted proxies (src/proxy/client-address.ts). */
export type ClientAddress = (call: CallContext) => string | undefined;

const connectionAddress: ClientAddress = (call) => unwrapMapped(call.source.address);

/** Stands for a client a trusted proxy named with something that is not an address: one shared bucket. */
const UNKNOWN_CLIENT = '\u0000?';

/** One `key` entry of a RateLimitPolicy rule (validated: source.principal, source.ip, header:NAME, claim:NAME). */
function compileKeyPart(part: string, clientAddress: ClientAddress = connectionAddress): KeyPart {
  if (part === 'source.principal') return (call) => call.source.principal ?? MISSING;
  if (part === 'source.ip') return (call) => clientAddress(call) ?? UNKNOWN_CLIENT;
  if (part.startsWith('header:')) {
    const name = part.slice('header:'.length);
    return (call) => {
      const value = call.headers[name];
      if (value === undefined) return MISSING;
      return Array.isArray(value) ? value.join(',') : value;
    };
  }
  if (part.startsWith('claim:')) {
    const name = part.slice('claim:'.length);
    // Claims exist only once authn verified a token: an unverified claim is never a key.
    return (call) => claimText(call.annotations.auth?.claims[name]);
  }
  throw new Error(`unknown rate-limit key ${part}`);
}

/** The values of every part, separated by NUL (which no part value contains unquoted). */
export function compileKey(parts: readonly string[], clientAddress?: ClientAddress): KeyPart {
  const compiled = parts.map((part) => compileKeyPart(part, clientAddress));
  if (compiled.length === 1) return compiled[0]!;
  return (call) => {
    let key = compiled[0]!(call);
    for (let i = 1; i < compiled.length; i++) key += `\u0000${compiled[i]!(call)}`;
    return key;
  };
}

const LOCAL_RAW_LIMIT = 256;

/** Key in the local table: raw while short (no hashing on the common path), hashed when long so memory stays bounded. */
export function localBucketKey(ruleKey: string, value: string): string {
  const raw = `${ruleKey}\u0000${value}`;
  return raw.length <= LOCAL_RAW_LIMIT ? raw : `${ruleKey}\u0000#${createHash('sha256').update(value).digest('base64url')}`;
}

/** Key in Redis: the rule readable (operators find it with SCAN), the value hashed. */
export function globalBucketKey(ruleKey: string, value: string): string {
  return `${ruleKey}:${createHash('sha256').update(value).digest('base64url').slice(0, 32)}`;
}
