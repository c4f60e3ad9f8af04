import { isUtf8 } from 'node:buffer';

/*
 * Safe JSON: what JSON.parse lets through and an app may not expect, checked
 * on the bytes before a body is parsed or a schema runs. JSON.parse keeps the
 * last of two equal keys (`{"role":"user","role":"admin"}`: a validator that
 * reads the first and an app that reads the last disagree), decodes an escaped
 * lone surrogate (`"\ud800"`) into a string no UTF-8 encoder can write back,
 * rounds integers past 2^53 without a word (an id of 9007199254740993 becomes
 * ...992), and takes any depth and any number of members, which a schema then
 * walks (uniqueItems is quadratic in the items).
 *
 * One pass over the bytes, no allocation per byte: a key is decoded once, to
 * compare it with its object's other keys; a number is read only when it is
 * long enough to be unsafe. The pass stops at the first finding no rule can
 * accept, so a bomb costs at most the bytes up to its limit.
 */

export interface JsonLimits {
  /** Objects and arrays inside each other; the top-level value is depth 1. */
  readonly maxDepth: number;
  /** Members of one object. */
  readonly maxObjectMembers: number;
  /** Items of one array. */
  readonly maxArrayItems: number;
  /** Integers beyond ±(2^53 - 1) and numbers that overflow to Infinity: refused, or allowed. */
  readonly unsafeNumbers: 'refuse' | 'allow';
}

export type SafeJsonCode = 'validate.json_duplicate_key' | 'validate.json_too_deep' | 'validate.json_too_many_members' | 'validate.json_unsafe_number' | 'validate.json_invalid_utf8';

export interface SafeJsonFailure {
  readonly code: SafeJsonCode;
  readonly reason: string;
}

/** What one pass found, under the loosest limits of the rules that read the body (each rule then applies its own). */
export interface JsonScan {
  /** Not UTF-8, or an escaped lone surrogate: refused by every rule. */
  readonly invalid: string | undefined;
  /** Byte offset of the first key repeated in its object. */
  readonly duplicateAt: number | undefined;
  /** Byte offset of the first unsafe number. */
  readonly unsafeNumberAt: number | undefined;
  /** The deepest nesting seen (the pass stops just past the limit it was given). */
  readonly depth: number;
  readonly objectMembers: number;
  readonly arrayItems: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;
const LOWER_U = 0x75;

const OBJECT = 1;
const ARRAY = 2;

/** The value of 4 hex digits at `at`, or -1. */
function hex4(bytes: Uint8Array, at: number): number {
  if (at + 4 > bytes.length) return -1;
  let value = 0;
  for (let k = at; k < at + 4; k++) {
    const c = bytes[k]!;
    const digit = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x41 && c <= 0x46 ? c - 0x37 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

function isNumberByte(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45;
}

/** Whether the number token `text` reads back as something else: an integer past 2^53, or an overflow to Infinity. */
function isUnsafeNumber(text: string): boolean {
  const value = Number(text);
  if (!Number.isFinite(value)) return true;
  const integer = !/[.eE]/.test(text);
  return integer && !Number.isSafeInteger(value);
}

/**
 * One pass over a body: the facts the rules' limits are checked against.
 * `limits` are the loosest of the rules reading it: past them no rule can
 * accept the body, so the pass stops there.
 */
export function scanJson(bytes: Buffer, limits: JsonLimits): JsonScan {
  const none = { duplicateAt: undefined, unsafeNumberAt: undefined, depth: 0, objectMembers: 0, arrayItems: 0 };
  if (!isUtf8(bytes)) return { ...none, invalid: 'request body is not valid UTF-8' };
  const n = bytes.length;
  const kinds: number[] = [0];
  const counts: number[] = [0];
  const keys: (Set<string> | undefined)[] = [undefined];
  let depth = 0;
  let maxDepth = 0;
  let objectMembers = 0;
  let arrayItems = 0;
  let expectKey = false; // in an object after `{` or `,`: the next string is a key
  let pendingItem = false; // in an array after `[` or `,`: the next value is an item
  let unsafeNumberAt: number | undefined;
  const result = (extra: { invalid?: string; duplicateAt?: number } = {}): JsonScan => ({
    invalid: extra.invalid,
    duplicateAt: extra.duplicateAt,
    unsafeNumberAt,
    depth: maxDepth,
    objectMembers,
    arrayItems,
  });
  /** Counts an item of the innermost array; false past the limit. */
  const item = (): boolean => {
    pendingItem = false;
    const count = ++counts[depth]!;
    if (count > arrayItems) arrayItems = count;
    return count <= limits.maxArrayItems;
  };

  for (let i = 0; i < n; i++) {
    const b = bytes[i]!;
    if (b === QUOTE) {
      const start = i + 1;
      let escaped = false;
      for (i = start; i < n; i++) {
        const c = bytes[i]!;
        if (c === QUOTE) break;
        if (c !== BACKSLASH) continue;
        escaped = true;
        if (bytes[i + 1] !== LOWER_U) {
          i++;
          continue;
        }
        const unit = hex4(bytes, i + 2);
        if (unit >= 0xd800 && unit <= 0xdbff) {
          const low = bytes[i + 6] === BACKSLASH && bytes[i + 7] === LOWER_U ? hex4(bytes, i + 8) : -1;
          if (low < 0xdc00 || low > 0xdfff) return result({ invalid: `request body escapes a lone surrogate (\\u${unit.toString(16)}) at byte ${i}` });
          i += 11;
        } else if (unit >= 0xdc00 && unit <= 0xdfff) {
          return result({ invalid: `request body escapes a lone surrogate (\\u${unit.toString(16)}) at byte ${i}` });
        } else {
          i += 5;
        }
      }
      if (expectKey) {
        expectKey = false;
        const count = ++counts[depth]!;
        if (count > objectMembers) objectMembers = count;
        if (count > limits.maxObjectMembers) return result();
        let key = bytes.toString('utf8', start, i);
        if (escaped) {
          try {
            key = JSON.parse(`"${key}"`) as string;
          } catch {
            // A malformed escape: JSON.parse refuses the body after this pass.
          }
        }
        const seen = (keys[depth] ??= new Set());
        if (seen.has(key)) return result({ duplicateAt: start - 1 });
        seen.add(key);
      } else if (pendingItem && !item()) {
        return result();
      }
      continue;
    }
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09 || b === 0x3a /* : */) continue;
    if (b === OPEN_BRACE || b === OPEN_BRACKET) {
      if (pendingItem && !item()) return result();
      depth++;
      if (depth > maxDepth) maxDepth = depth;
      if (depth > limits.maxDepth) return result();
      kinds[depth] = b === OPEN_BRACE ? OBJECT : ARRAY;
      counts[depth] = 0;
      keys[depth] = undefined;
      expectKey = b === OPEN_BRACE;
      pendingItem = b === OPEN_BRACKET;
      continue;
    }
    if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
      if (depth > 0) keys[depth--] = undefined;
      expectKey = false;
      pendingItem = false;
      continue;
    }
    if (b === COMMA) {
      expectKey = kinds[depth] === OBJECT;
      pendingItem = kinds[depth] === ARRAY;
      continue;
    }
    // A scalar: a number, true, false, null (or bytes JSON.parse will refuse).
    if (pendingItem && !item()) return result();
    if ((b >= 0x30 && b <= 0x39) || b === 0x2d) {
      let end = i + 1;
      let exponent = false;
      for (; end < n && isNumberByte(bytes[end]!); end++) if ((bytes[end]! | 0x20) === 0x65) exponent = true;
      // Without an exponent, 15 digits or fewer always read back exactly.
      if ((exponent || end - i > 15) && unsafeNumberAt === undefined && isUnsafeNumber(bytes.toString('latin1', i, end))) unsafeNumberAt = i;
      i = end - 1;
    }
  }
  return result();
}

/** The loosest of several rules' limits: what one shared pass must see past. */
export function loosestLimits(all: readonly JsonLimits[]): JsonLimits {
  let maxDepth = 0;
  let maxObjectMembers = 0;
  let maxArrayItems = 0;
  for (const l of all) {
    maxDepth = Math.max(maxDepth, l.maxDepth);
    maxObjectMembers = Math.max(maxObjectMembers, l.maxObjectMembers);
    maxArrayItems = Math.max(maxArrayItems, l.maxArrayItems);
  }
  return { maxDepth, maxObjectMembers, maxArrayItems, unsafeNumbers: 'allow' };
}

/** A rule's verdict on a scan, in a fixed order so the same body always gets the same code. */
export function checkJsonScan(scan: JsonScan, limits: JsonLimits): SafeJsonFailure | undefined {
  if (scan.invalid) return { code: 'validate.json_invalid_utf8', reason: scan.invalid };
  if (scan.duplicateAt !== undefined) return { code: 'validate.json_duplicate_key', reason: `request body repeats a key in one object (at byte ${scan.duplicateAt})` };
  if (scan.depth > limits.maxDepth) return { code: 'validate.json_too_deep', reason: `request body nests JSON deeper than ${limits.maxDepth} levels` };
  if (scan.objectMembers > limits.maxObjectMembers) {
    return { code: 'validate.json_too_many_members', reason: `request body has an object with more than ${limits.maxObjectMembers} members` };
  }
  if (scan.arrayItems > limits.maxArrayItems) return { code: 'validate.json_too_many_members', reason: `request body has an array with more than ${limits.maxArrayItems} items` };
  if (scan.unsafeNumberAt !== undefined && limits.unsafeNumbers === 'refuse') {
    return { code: 'validate.json_unsafe_number', reason: `request body has a number that JSON parsers cannot hold exactly (beyond 2^53 or out of range, at byte ${scan.unsafeNumberAt})` };
  }
  return undefined;
}
