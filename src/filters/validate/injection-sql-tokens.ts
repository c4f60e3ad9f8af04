/*
 * The tokens SQL injection is found on (injection-sql.ts): words, numbers,
 * quotes, operators and block comments of a normalized value, in one linear
 * pass, kept as offsets (a token's text is sliced only when a rule reads
 * it). One instance is reused for every value of a scan: its arrays are
 * refilled, and grown only for a value with more tokens than any before.
 */

export const WORD = 1;
export const NUM = 2;
export const QUOTE = 3;
export const OP = 4;
export const COMMENT = 5;

/** Longest token text kept: longer words are never keywords. */
const MAX_TOKEN = 40;

function isWordChar(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 95 || c === 36 || c === 64 || c === 46 || c >= 0x80;
}

function isWordStart(c: number): boolean {
  return (c >= 97 && c <= 122) || c === 95 || c === 64 || c === 36 || c >= 0x80;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** -- || && <> != <= >= :: */
function isTwoCharOp(a: number, b: number): boolean {
  return (a === b && (a === 45 || a === 124 || a === 38 || a === 58)) || (b === 61 && (a === 33 || a === 60 || a === 62)) || (a === 60 && b === 62);
}
const BOOL_WORDS = new Set(['or', 'and', 'xor', 'div']);
const COMPARE_OPS = new Set(['=', '<', '>', '!=', '<>', '<=', '>=']);
const COMPARE_WORDS = new Set(['like', 'rlike', 'regexp', 'between', 'sounds', 'glob']);

export class SqlTokens {
  kind = new Uint8Array(64);
  start = new Int32Array(64);
  end = new Int32Array(64);
  n = 0;
  /** The value tokenized. */
  source = '';
  /** A MySQL executable comment (`/*!50000 ...`) was opened. */
  versioned = false;
  /** A block comment glued to a word on either side (`union/**\/select`), or an empty one. */
  gluedComment = false;

  /** Refills the tokens from `s`. */
  read(s: string): void {
    this.n = 0;
    this.source = s;
    this.versioned = false;
    this.gluedComment = false;
    const n = s.length;
    let i = 0;
    while (i < n) {
      const c = s.charCodeAt(i);
      if (c === 32 || c === 10) {
        i++;
      } else if (
        c === 43 &&
        i > 0 &&
        (isWordChar(s.charCodeAt(i - 1)) || s.charCodeAt(i - 1) === 39 || s.charCodeAt(i - 1) === 34) &&
        (isWordStart(s.charCodeAt(i + 1)) || isDigit(s.charCodeAt(i + 1)) || s.charCodeAt(i + 1) === 39)
      ) {
        // `1+union+select`, `'+or+1=1`: a form-encoded space nobody decoded; `char(65)+char(66)` stays an operator.
        i++;
      } else if (isWordStart(c)) {
        let j = i + 1;
        while (j < n && isWordChar(s.charCodeAt(j))) j++;
        let end = j;
        while (end > i + 1 && s.charCodeAt(end - 1) === 46) end--; // a sentence's full stop is not part of the word
        this.#push(WORD, i, end);
        i = end;
      } else if (isDigit(c)) {
        let j = i + 1;
        while (j < n && isWordChar(s.charCodeAt(j)) && s.charCodeAt(j) !== 64) j++;
        this.#push(NUM, i, j);
        i = j;
      } else if (c === 39 || c === 34 || c === 96) {
        this.#push(QUOTE, i, i + 1);
        i++;
      } else if (c === 47 && s.charCodeAt(i + 1) === 42) {
        // `/*!NNNNN` runs its content as SQL: drop the opener, keep tokenizing (its `*/` is skipped below).
        if (s.charCodeAt(i + 2) === 33) {
          this.versioned = true;
          let j = i + 3;
          while (j < n && j - i < 8 && isDigit(s.charCodeAt(j))) j++;
          i = j;
          continue;
        }
        const close = s.indexOf('*/', i + 2);
        const end = close < 0 ? n : close + 2;
        if (close === i + 2 || (i > 0 && isWordChar(s.charCodeAt(i - 1))) || (end < n && isWordChar(s.charCodeAt(end)))) this.gluedComment = true;
        this.#push(COMMENT, i, end);
        i = end;
      } else if (c === 42 && s.charCodeAt(i + 1) === 47) {
        i += 2;
      } else {
        const len = isTwoCharOp(c, s.charCodeAt(i + 1)) ? 2 : 1;
        this.#push(OP, i, i + len);
        i += len;
      }
    }
  }

  #push(kind: number, from: number, to: number): void {
    if (this.n === this.kind.length) {
      const size = this.n * 2;
      const grow = <T extends Uint8Array | Int32Array>(a: T, b: T): T => (b.set(a), b);
      this.kind = grow(this.kind, new Uint8Array(size));
      this.start = grow(this.start, new Int32Array(size));
      this.end = grow(this.end, new Int32Array(size));
    }
    this.kind[this.n] = kind;
    this.start[this.n] = from;
    this.end[this.n] = to;
    this.n++;
  }

  /** The text of token `i` ('' past the end, or for a token longer than MAX_TOKEN: never a keyword). */
  at(i: number): string {
    if (i >= this.n) return '';
    const from = this.start[i]!;
    const to = this.end[i]!;
    return to - from > MAX_TOKEN ? '' : this.source.slice(from, to);
  }

  isOp(i: number, op: string): boolean {
    if (i >= this.n || this.kind[i] !== OP || this.end[i]! - this.start[i]! !== op.length) return false;
    const from = this.start[i]!;
    return this.source.charCodeAt(from) === op.charCodeAt(0) && (op.length === 1 || this.source.charCodeAt(from + 1) === op.charCodeAt(1));
  }

  /** The next token that is not a block comment (comments stand in for spaces). */
  next(i: number): number {
    let j = i + 1;
    while (j < this.n && this.kind[j] === COMMENT) j++;
    return j;
  }

  /** Past up to `max` `op` tokens from `i`. */
  skipOps(i: number, op: string, max: number): number {
    let j = i;
    for (let k = 0; k < max && this.isOp(j, op); k++) j = this.next(j);
    return j;
  }

  isBool(i: number): boolean {
    if (i >= this.n) return false;
    if (this.kind[i] === OP) return this.isOp(i, '||') || this.isOp(i, '&&');
    return this.kind[i] === WORD && BOOL_WORDS.has(this.at(i));
  }

  isCompare(i: number): boolean {
    if (i >= this.n) return false;
    if (this.kind[i] === OP) return COMPARE_OPS.has(this.at(i));
    return this.kind[i] === WORD && COMPARE_WORDS.has(this.at(i));
  }

  isComment(i: number): boolean {
    return i < this.n && (this.kind[i] === COMMENT || this.isOp(i, '--') || this.isOp(i, '#'));
  }

  /** Nothing after `i` but dashes: what a comment at `i` hides is the rest of the app's query. Stops at the first other token. */
  onlyDashesAfter(i: number): boolean {
    for (let j = i + 1; j < this.n; j++) if (!(this.isOp(j, '-') || this.isOp(j, '--'))) return false;
    return true;
  }
}
