/*
 * What an attacker wraps a payload in, taken off before the signatures look:
 * percent-encoding (also %uXXXX, overlong UTF-8 such as %c0%af for "/", and
 * encoded twice or three times), HTML character references (&lt; &#60;
 * &#x3c, with or without the semicolon), JavaScript escapes (\x3c \u003c),
 * full-width forms (＜script＞), case, runs of white space. (SQL comments that
 * stand in for a space are handled by the SQL tokenizer, injection-sql-tokens.ts.)
 *
 * Every step is one pass over its input and never makes it longer, and the
 * decoding rounds are bounded: a value costs O(length), whatever it holds.
 */

/** Decoding rounds: `%2527` needs two; a third catches one more layer of HTML or JS escapes; more is noise. */
const MAX_ROUNDS = 4;

const NAMED_ENTITIES: Readonly<Record<string, string>> = {
  lt: '<',
  gt: '>',
  amp: '&',
  quot: '"',
  apos: "'",
  sol: '/',
  bsol: '\\',
  colon: ':',
  semi: ';',
  lpar: '(',
  rpar: ')',
  lsqb: '[',
  rsqb: ']',
  lcub: '{',
  rcub: '}',
  tab: '\t',
  newline: '\n',
  nbsp: ' ',
  excl: '!',
  num: '#',
  dollar: '$',
  percnt: '%',
  equals: '=',
  plus: '+',
  comma: ',',
  period: '.',
  grave: '`',
  hat: '^',
  ast: '*',
  lowbar: '_',
  verbar: '|',
  vert: '|',
  quest: '?',
  commat: '@',
};

function hexDigit(code: number): number {
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 65 && code <= 70) return code - 55;
  if (code >= 97 && code <= 102) return code - 87;
  return -1;
}

/** The byte of `%XX` at `at`, or -1. */
function pctByte(s: string, at: number): number {
  if (s.charCodeAt(at) !== 37 || at + 2 >= s.length) return -1;
  const hi = hexDigit(s.charCodeAt(at + 1));
  const lo = hi < 0 ? -1 : hexDigit(s.charCodeAt(at + 2));
  return lo < 0 ? -1 : hi * 16 + lo;
}

/** Up to `max` hex digits at `at`: [value, digits read]. */
function readHex(s: string, at: number, max: number): [number, number] {
  let value = 0;
  let n = 0;
  while (n < max && at + n < s.length) {
    const d = hexDigit(s.charCodeAt(at + n));
    if (d < 0) break;
    value = value * 16 + d;
    n++;
  }
  return [value, n];
}

function readDecimal(s: string, at: number, max: number): [number, number] {
  let value = 0;
  let n = 0;
  while (n < max && at + n < s.length) {
    const c = s.charCodeAt(at + n);
    if (c < 48 || c > 57) break;
    value = value * 10 + (c - 48);
    n++;
  }
  return [value, n];
}

function fromCodePoint(cp: number): string {
  return cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? '\ufffd' : String.fromCodePoint(cp);
}

/** `%XX` (a UTF-8 sequence of escapes decoded as one character, overlong forms too) or `%uXXXX` at `i`: [text, length], or undefined. */
function percentAt(s: string, i: number): [string, number] | undefined {
  if (s.charCodeAt(i + 1) === 117 || s.charCodeAt(i + 1) === 85) {
    const [value, n] = readHex(s, i + 2, 4);
    return n === 4 ? [fromCodePoint(value), 6] : undefined;
  }
  const lead = pctByte(s, i);
  if (lead < 0) return undefined;
  const extra = lead >= 0xc0 && lead < 0xe0 ? 1 : lead >= 0xe0 && lead < 0xf0 ? 2 : lead >= 0xf0 && lead < 0xf8 ? 3 : 0;
  if (extra > 0) {
    // Decoded leniently, as a lax decoder in an app would: %c0%af is "/".
    let cp = lead & (0x3f >> extra);
    let ok = true;
    for (let k = 1; k <= extra; k++) {
      const cont = pctByte(s, i + 3 * k);
      if (cont < 0x80 || cont > 0xbf) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (cont & 0x3f);
    }
    if (ok) return [fromCodePoint(cp), 3 * (extra + 1)];
  }
  return [String.fromCharCode(lead), 3];
}

/** `&name;`, `&#60;` or `&#x3c;` (semicolon optional, as browsers read them) at `i`: [text, length], or undefined. */
function entityAt(s: string, i: number): [string, number] | undefined {
  if (s.charCodeAt(i + 1) === 35 /* # */) {
    const hex = s.charCodeAt(i + 2) === 120 || s.charCodeAt(i + 2) === 88;
    const start = i + (hex ? 3 : 2);
    // Leading zeros pad a reference (&#0000060;): read up to 12 digits, a code point needs at most 7.
    const [value, n] = hex ? readHex(s, start, 12) : readDecimal(s, start, 12);
    if (n === 0) return undefined;
    const end = start + n;
    return [fromCodePoint(value), end - i + (s.charCodeAt(end) === 59 ? 1 : 0)];
  }
  let end = i + 1;
  while (end < s.length && end - i <= 8) {
    const c = s.charCodeAt(end) | 0x20;
    if (c < 97 || c > 122) break;
    end++;
  }
  const name = s.slice(i + 1, end).toLowerCase();
  const text = NAMED_ENTITIES[name];
  if (text === undefined) return undefined;
  return [text, end - i + (s.charCodeAt(end) === 59 ? 1 : 0)];
}

/** `\xHH`, `\uHHHH` or `\u{H..}` at `i`: [text, length], or undefined. */
function escapeAt(s: string, i: number): [string, number] | undefined {
  const kind = s.charCodeAt(i + 1);
  if (kind === 120 /* x */) {
    const [value, n] = readHex(s, i + 2, 2);
    return n === 2 ? [String.fromCharCode(value), 4] : undefined;
  }
  if (kind !== 117 /* u */) return undefined;
  if (s.charCodeAt(i + 2) === 123 /* { */) {
    const [value, n] = readHex(s, i + 3, 6);
    return n > 0 && s.charCodeAt(i + 3 + n) === 125 ? [fromCodePoint(value), n + 4] : undefined;
  }
  const [value, n] = readHex(s, i + 2, 4);
  return n === 4 ? [String.fromCharCode(value), 6] : undefined;
}

const HAS_ESCAPE = /[%&\\]/;

/** One round of decoding; the input itself when there was nothing to decode. */
function decodeOnce(s: string): string {
  if (!HAS_ESCAPE.test(s)) return s;
  let out = '';
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const found = c === 37 ? percentAt(s, i) : c === 38 ? entityAt(s, i) : c === 92 ? escapeAt(s, i) : undefined;
    if (!found) continue;
    out += s.slice(from, i) + found[0];
    i += found[1] - 1;
    from = i + 1;
  }
  return from === 0 ? s : out + s.slice(from);
}

/** Characters that change in the final pass: white space other than one plain space inside, invisible ones, full-width forms. */
const NEEDS_FOLDING = /[\t\v\f\r\u0085\u00a0\u00ad\u1680\u180e\u2000-\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff\uff01-\uff5e\u2044\u2215\u2216\u29f8\u29f9]|[ \n]{2}|^[ \n]|[ \n]$/;

const UTF16 = new TextDecoder('utf-16le');

function fold(s: string): string {
  if (!NEEDS_FOLDING.test(s)) return s;
  const out = new Uint16Array(s.length);
  let n = 0;
  let pending = 0; // white space seen since the last character: 0, a space (32) or a line break (10), which wins
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c === 0xad || c === 0x180e || (c >= 0x200b && c <= 0x200d) || c === 0x2060 || c === 0xfeff) continue; // invisible: dropped
    // Line breaks separate shell commands: kept, as one "\n"; every other space is one " ".
    if (c === 10 || c === 13 || c === 0x85 || c === 0x2028 || c === 0x2029) {
      pending = 10;
      continue;
    }
    if (c === 32 || c === 9 || c === 11 || c === 12 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x202f || c === 0x205f || c === 0x3000) {
      if (pending === 0) pending = 32;
      continue;
    }
    if (c >= 0xff01 && c <= 0xff5e)
      c -= 0xfee0; // full-width ASCII
    else if (c === 0x2215 || c === 0x2044 || c === 0x29f8)
      c = 47; // slashes that some servers read as "/" (IIS %u2215)
    else if (c === 0x2216 || c === 0x29f9) c = 92;
    // A leading line break stays: "%0aid" appends a command to whatever line the app builds.
    if (pending !== 0 && (n > 0 || pending === 10)) out[n++] = pending;
    pending = 0;
    out[n++] = c;
  }
  return UTF16.decode(out.subarray(0, n));
}

/**
 * A value as the signatures see it: decoded up to MAX_ROUNDS times, lower
 * case, full-width folded, spaces folded. `plus` turns `+` into a space
 * first (query strings and form bodies).
 */
export function normalizeValue(raw: string, plus = false): string {
  let s = plus && raw.includes('+') ? raw.replaceAll('+', ' ') : raw;
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const next = decodeOnce(s);
    if (next === s) break;
    s = next;
  }
  return fold(s.toLowerCase());
}

/** The regexes of this file: each must pass the ReDoS check (tested). */
export const DECODE_REGEXES: readonly RegExp[] = [HAS_ESCAPE, NEEDS_FOLDING];
