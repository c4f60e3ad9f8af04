/*
 * Shared by the injection signatures: which characters a value holds (one
 * pass), and literal search gated on them.
 */

/*
 * Which characters a value holds, in one pass: each class's checks run only
 * where what they look for can be (no `<`, no tag; no `;|&`, no separator), so
 * a plain sentence costs a few table lookups per character.
 */
export const QUOTE = 1 << 0;
export const SEMI = 1 << 1;
export const PIPE = 1 << 2;
export const AMP = 1 << 3;
export const LT = 1 << 4;
export const GT = 1 << 5;
export const PAREN = 1 << 6;
export const EQ = 1 << 7;
export const COLON = 1 << 8;
export const SLASH = 1 << 9;
export const BSLASH = 1 << 10;
export const DOLLAR = 1 << 11;
export const BRACE = 1 << 12;
export const HASH = 1 << 14;
export const AT = 1 << 15;
export const STAR = 1 << 16;
export const NL = 1 << 18;
export const NUL = 1 << 19;
export const DOT = 1 << 20;
export const DIGIT = 1 << 21;
export const BACKTICK = 1 << 22;
export const UNDERSCORE = 1 << 23;

const CHAR_BITS = (() => {
  const bits = new Uint32Array(128);
  const set = (chars: string, bit: number) => {
    for (const c of chars) bits[c.charCodeAt(0)]! |= bit;
  };
  set('\'"`', QUOTE);
  set('`', BACKTICK);
  set(';', SEMI);
  set('|', PIPE);
  set('&', AMP);
  set('<', LT);
  set('>', GT);
  set('()', PAREN);
  set('=', EQ);
  set(':', COLON);
  set('/', SLASH);
  set('\\', BSLASH);
  set('$', DOLLAR);
  set('{}', BRACE);
  set('#', HASH);
  set('@', AT);
  set('*', STAR);
  set('\n', NL);
  set('\0', NUL);
  set('.', DOT);
  set('0123456789', DIGIT);
  set('_', UNDERSCORE);
  return bits;
})();

export function charMask(text: string): number {
  let mask = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 128) mask |= CHAR_BITS[c]!;
  }
  return mask;
}

export function isLetter(c: number): boolean {
  return c >= 97 && c <= 122;
}

export function isIdentChar(c: number): boolean {
  return isLetter(c) || (c >= 48 && c <= 57) || c === 95 || c === 36;
}

/**
 * Literals to look for, behind a few gates: substrings every one of them
 * contains. Most values hold no gate, and cost a handful of native searches
 * instead of one per literal.
 */
export interface Needles {
  readonly gates: readonly string[];
  readonly list: readonly string[];
}

export function needles(gates: readonly string[], list: readonly string[]): Needles {
  const ungated = list.filter((text) => !gates.some((gate) => text.includes(gate)));
  if (ungated.length > 0) throw new Error(`injection signatures: no gate for ${ungated.join(', ')}`);
  return { gates, list };
}

/** Whether `text` contains any of the literals. */
export function hasAny(text: string, needles: Needles): boolean {
  if (!needles.gates.some((gate) => text.includes(gate))) return false;
  return needles.list.some((needle) => text.includes(needle));
}
