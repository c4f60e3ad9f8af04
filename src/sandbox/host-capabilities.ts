import type { KeyObject } from 'node:crypto';
import { createHash, createHmac, createSecretKey } from 'node:crypto';
import type { QuickJSContext, QuickJSHandle } from 'quickjs-emscripten-core';

/** Largest key and message the host's HMAC takes from a guest. */
const MAX_HMAC_KEY_HEX = 1024;
const MAX_HMAC_MESSAGE = 64 * 1024;
/** Hex keys whose KeyObject a program keeps. */
const MAX_CACHED_KEYS = 16;

/**
 * The one capability the host gives a guest, on purpose: `meshgate.hmacSha256
 * (keyHex, message) -> hex` and `meshgate.sha256(message) -> hex`, computed by
 * node:crypto. Pure functions of their arguments (no I/O, no state, bounded
 * input): nothing of the host is reachable through them. Why: the same HMAC in
 * plain JavaScript runs ~500 us per call in QuickJS's interpreter, ~100 times
 * the host's (bench/user-filter.ts), and signature checks are a common reason
 * to write a check of your own. `meshgate.hmacSha256Secret(name, message)`
 * signs with a key the host holds (spec.secretKey): the guest names it and
 * never sees it, so a key need not travel in the policy.
 */
export function installHost(ctx: QuickJSContext, secretKey: ((name: string) => Buffer | undefined) | undefined): void {
  const text = (handle: QuickJSHandle, what: string, max: number): string => {
    if (ctx.typeof(handle) !== 'string') throw new TypeError(`${what}: expected a string`);
    const value = ctx.getString(handle);
    if (value.length > max) throw new RangeError(`${what}: at most ${max} characters`);
    return value;
  };
  // HMAC with a KeyObject made once per key: with the raw bytes node:crypto imports the key on every call (~9.7 us against ~1.8).
  const hexKeys = new Map<string, KeyObject>();
  const fileKeys = new WeakMap<Buffer, KeyObject>();
  const keyFromHex = (keyHex: string): KeyObject => {
    let key = hexKeys.get(keyHex);
    if (key === undefined) {
      if (hexKeys.size >= MAX_CACHED_KEYS) hexKeys.clear(); // a check uses a key or two; a check minting keys per call pays the import
      key = createSecretKey(Buffer.from(keyHex, 'hex'));
      hexKeys.set(keyHex, key);
    }
    return key;
  };
  const keyFromFile = (bytes: Buffer): KeyObject => {
    let key = fileKeys.get(bytes);
    if (key === undefined) {
      key = createSecretKey(bytes);
      fileKeys.set(bytes, key); // secret-files hands out one Buffer per read, so a rotated file gets a new KeyObject
    }
    return key;
  };
  const host = ctx.newObject();
  const hmac = ctx.newFunction('hmacSha256', (keyHandle, messageHandle) => {
    const keyHex = text(keyHandle, 'hmacSha256 key', MAX_HMAC_KEY_HEX);
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(keyHex)) throw new TypeError('hmacSha256 key: expected hex');
    return ctx.newString(
      createHmac('sha256', keyFromHex(keyHex))
        .update(text(messageHandle, 'hmacSha256 message', MAX_HMAC_MESSAGE), 'utf8')
        .digest('hex'),
    );
  });
  // The same HMAC with a key the guest names but never holds: a mounted Secret of the sidecar (userFilters.secretsDir).
  const hmacSecret = ctx.newFunction('hmacSha256Secret', (nameHandle, messageHandle) => {
    const name = text(nameHandle, 'hmacSha256Secret name', 255);
    const key = secretKey?.(name);
    if (key === undefined) throw new Error(`hmacSha256Secret: no secret ${JSON.stringify(name)} for this check (spec.secrets and the sidecar's userFilters.secretsDir)`);
    return ctx.newString(
      createHmac('sha256', keyFromFile(key))
        .update(text(messageHandle, 'hmacSha256Secret message', MAX_HMAC_MESSAGE), 'utf8')
        .digest('hex'),
    );
  });
  const sha = ctx.newFunction('sha256', (messageHandle) =>
    ctx.newString(
      createHash('sha256')
        .update(text(messageHandle, 'sha256 message', MAX_HMAC_MESSAGE), 'utf8')
        .digest('hex'),
    ),
  );
  ctx.setProp(host, 'hmacSha256', hmac);
  ctx.setProp(host, 'sha256', sha);
  ctx.setProp(host, 'hmacSha256Secret', hmacSecret);
  ctx.defineProp(ctx.global, 'meshgate', { value: host, configurable: false, enumerable: false });
  hmac.dispose();
  sha.dispose();
  hmacSecret.dispose();
  host.dispose();
  const frozen = ctx.evalCode('Object.freeze(globalThis.meshgate)', 'meshgate:host', { type: 'global' });
  (frozen.error ?? frozen.value).dispose();
}
