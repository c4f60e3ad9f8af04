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
  if (!isUtf8(bytes)) return finish('request body is not valid UTF-8', undefined, undefined, 0, 0, 0);
  // Plain locals, no closures over them: V8 keeps them in registers, not in a heap context (2-3x faster).
  const n = bytes.length;
  // Per level (index = depth): grown as the body nests. They start at what V8 keeps inside its heap (64
  // bytes): a larger typed array gets its own off-heap buffer, a malloc and a GC finalizer for each
  // body (sized for the limit, the five cost 3.2-5.6 µs per 26-byte body, most of this pass's time).
  let kinds = new Uint8Array(FIRST_LEVELS);
  let counts = new Int32Array(FIRST_LEVELS);
  let base = new Int32Array(FIRST_LEVELS);
  // Each open object's keys: byte ranges on one stack (compared byte by byte, no string made) while an
  // object has few; past SMALL_OBJECT, or once a key has an escape, a Set of decoded keys for that object.
  const keys: (Set<string> | undefined)[] = [];
  let keyStart = new Int32Array(FIRST_LEVELS);
  let keyEnd = new Int32Array(FIRST_LEVELS);
  let top = 0;
  let depth = 0;
  let maxDepth = 0;
  let objectMembers = 0;
  let arrayItems = 0;
  let expectKey = false; // in an object after `{` or `,`: the next string is a key
  let pendingItem = false; // in an array after `[` or `,`: the next value is an item
  let unsafeNumberAt: number | undefined;

  for (let i = 0; i < n; i++) {
    const b = bytes[i]!;
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09 || b === 0x3a /* : */) continue;
    if (pendingItem && b !== CLOSE_BRACKET) {
      // The first byte of an array's next value: counted before anything else is looked at.
      pendingItem = false;
      const count = ++counts[depth]!;
      if (count > arrayItems) arrayItems = count;
      if (count > limits.maxArrayItems) return finish(undefined, undefined, unsafeNumberAt, maxDepth, objectMembers, arrayItems);
    }
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
          if (low < 0xdc00 || low > 0xdfff) return finish(loneSurrogate(unit, i), undefined, unsafeNumberAt, maxDepth, objectMembers, arrayItems);
          i += 11;
        } else if (unit >= 0xdc00 && unit <= 0xdfff) {
          return finish(loneSurrogate(unit, i), undefined, unsafeNumberAt, maxDepth, objectMembers, arrayItems);
        } else if (unit >= 0) {
          i += 5;
        }
      }
      if (expectKey) {
        expectKey = false;
        const count = ++counts[depth]!;
        if (count > objectMembers) objectMembers = count;
        if (count > limits.maxObjectMembers) return finish(undefined, undefined, unsafeNumberAt, maxDepth, objectMembers, arrayItems);
        let seen = keys[depth];
        if (!seen && !escaped && top - base[depth]! < SMALL_OBJECT) {
          for (let k = base[depth]!; k < top; k++) {
            if (sameBytes(bytes, keyStart[k]!, keyEnd[k]!, start, i)) return finish(undefined, start - 1, unsafeNumberAt, maxDepth, objectMembers, arrayItems);
          }
          if (top === keyStart.length) {
            keyStart = grown(keyStart);
            keyEnd = grown(keyEnd);
          }
          keyStart[top] = start;
          keyEnd[top++] = i;
          continue;
        }
        if (!seen) {
          // Many keys, or an escaped one: decode this object's keys so far into a Set.
          keys[depth] = seen = new Set();
          for (let k = base[depth]!; k < top; k++) seen.add(keyText(bytes, keyStart[k]!, keyEnd[k]!, true));
          top = base[depth]!;
        }
        const key = keyText(bytes, start, i, escaped);
        if (seen.has(key)) return finish(undefined, start - 1, unsafeNumberAt, maxDepth, objectMembers, arrayItems);
        seen.add(key);
      }
      continue;
    }
    if (b === OPEN_BRACE || b === OPEN_BRACKET) {
      depth++;
      if (depth > maxDepth) maxDepth = depth;
      if (depth > limits.maxDepth) return finish(undefined, undefined, unsafeNumberAt, maxDepth, objectMembers, arrayItems);
      if (depth === kinds.length) {
        kinds = grownBytes(kinds);
        counts = grown(counts);
        base = grown(base);
      }
      kinds[depth] = b === OPEN_BRACE ? OBJECT : ARRAY;
      counts[depth] = 0;
      keys[depth] = undefined;
      base[depth] = top;
      expectKey = b === OPEN_BRACE;
      pendingItem = b === OPEN_BRACKET;
      continue;
    }
    if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
      if (depth > 0) {
        keys[depth] = undefined;
        top = base[depth--]!;
      }
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
    if ((b >= 0x30 && b <= 0x39) || b === 0x2d) {
      let end = i + 1;
      let exponent = false;
      for (; end < n && isNumberByte(bytes[end]!); end++) if ((bytes[end]! | 0x20) === 0x65) exponent = true;
      // Without an exponent, 15 digits or fewer always read back exactly.
      if ((exponent || end - i > 15) && unsafeNumberAt === undefined && isUnsafeNumber(bytes.toString('latin1', i, end))) unsafeNumberAt = i;
      i = end - 1;
    }
  }
  return finish(undefined, undefined, unsafeNumberAt, maxDepth, objectMembers, arrayItems);
}

/** Keys of one object compared as bytes, pairwise, up to this many; a Set of strings past it. */
const SMALL_OBJECT = 16;

function sameBytes(bytes: Buffer, aStart: number, aEnd: number, bStart: number, bEnd: number): boolean {
  if (aEnd - aStart !== bEnd - bStart) return false;
  for (let k = 0; k < aEnd - aStart; k++) if (bytes[aStart + k] !== bytes[bStart + k]) return false;
  return true;
}

function grown(a: Int32Array): Int32Array<ArrayBuffer> {
  const b = new Int32Array(a.length * 2);
  b.set(a);
  return b;
}

function grownBytes(a: Uint8Array): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(a.length * 2);
  b.set(a);
  return b;
}

/** Levels and keys tracked before the first growth: 16 Int32 values are V8's largest typed array kept inside its heap. */
const FIRST_LEVELS = 16;

function finish(invalid: string | undefined, duplicateAt: number | undefined, unsafeNumberAt: number | undefined, depth: number, objectMembers: number, arrayItems: number): JsonScan {
  return { invalid, duplicateAt, unsafeNumberAt, depth, objectMembers, arrayItems };
}

function loneSurrogate(unit: number, at: number): string {
  return `request body escapes a lone surrogate (\\u${unit.toString(16)}) at byte ${at}`;
}

/** A key as JSON.parse reads it: escapes decoded, so `"\u0072ole"` and `"role"` are one key. */
function keyText(bytes: Buffer, start: number, end: number, escaped: boolean): string {
  const raw = bytes.toString('utf8', start, end);
  if (!escaped) return raw;
  try {
    return JSON.parse(`"${raw}"`) as string;
  } catch {
    return raw; // a malformed escape: JSON.parse refuses the body after this pass
  }
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
