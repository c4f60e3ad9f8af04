import { BACKTICK, BRACE, COLON, EQ, hasAny, isIdentChar, isLetter, LT, needles, PAREN } from './injection-text.ts';

/*
 * Cross-site scripting signatures (weights: injection-signatures.ts): markup
 * that runs script (a script tag, a tag with an event handler, frames and
 * objects), script and data URLs, a string closed then a sink called
 * ('-alert(1)-'), DOM and CSS script access, template sandbox escapes.
 * Every loop walks occurrences with indexOf and looks a bounded distance
 * around each: linear in the value.
 */

const SCRIPT_TAG = /<\/?script\b/;
const TAG_BREAKOUT = /["'`] ?\/?> ?</;
const SPACED_SCRIPT_CALL = /^ ?[a-z_$]{1,30} ?[(`.[]/;

/** The regexes of this file: each must pass the ReDoS check (tested). */
export const XSS_REGEXES: readonly RegExp[] = [SCRIPT_TAG, TAG_BREAKOUT, SPACED_SCRIPT_CALL];

const DANGEROUS_TAGS = new Set([
  'iframe',
  'frame',
  'frameset',
  'object',
  'embed',
  'applet',
  'meta',
  'base',
  'isindex',
  'svg',
  'math',
  'xml',
  'bgsound',
  'portal',
  'xss',
  'animate',
  'handler',
  'listener',
  'layer',
  'ilayer',
  'import',
  'plaintext',
  'xmp',
  'noscript',
  'noembed',
  'script',
]);
const MARKUP_TAGS = new Set([
  'style',
  'link',
  'form',
  'template',
  'marquee',
  'set',
  'img',
  'image',
  'video',
  'audio',
  'source',
  'body',
  'input',
  'button',
  'details',
  'select',
  'textarea',
  'keygen',
  'table',
  'a',
  'div',
  'span',
  'p',
  'b',
  'i',
  'x',
]);
const SINKS = new Set(['alert', 'prompt', 'confirm', 'eval', 'execscript', 'settimeout', 'setinterval', 'fetch', 'print']);
const SCRIPT_SCHEMES = ['javascript', 'vbscript', 'livescript', 'mocha'];
const DATA_TYPES = ['text/html', 'image/svg+xml', 'application/javascript', 'application/x-javascript', 'application/ecmascript', 'application/xhtml+xml', 'text/javascript', 'text/xml'];
const DOM_ACCESS = needles(
  ['document', 'window', 'location', 'html', 'charcode', 'atob', 'constructor', '['],
  [
    'document.cookie',
    'document.domain',
    'document.write',
    'document.location',
    'window.location',
    'window.name',
    'window.open',
    'location.href',
    'location.hash',
    '.innerhtml=',
    '.innerhtml =',
    '.outerhtml=',
    'fromcharcode(',
    'atob(',
    'constructor.constructor',
    'self[',
    'top[',
    'parent[',
  ],
);
const CSS_EXPRESSIONS = needles(['expression', 'binding', 'behavior', '@import'], ['expression(', 'expression (', '-moz-binding', 'behavior:url', 'behavior: url', 'behavior :', '@import']);
const ATTRIBUTE_SINKS = ['srcdoc', 'formaction', 'xlink:href', 'dynsrc', 'lowsrc'];
const TEMPLATE_PAYLOADS = ['constructor', '$on', '$eval', 'alert(', 'prompt('];

/**
 * An event handler attribute at `p` (the `o` of `on...`): `onerror=alert(1)`,
 * `onload="..."`, not JSX's `onClick={f}`. Returns 'attribute' when a quote
 * opens it (`" onmouseover="...`), 'word' otherwise, undefined if none.
 */
function handlerAt(text: string, p: number): 'attribute' | 'word' | undefined {
  const before = p === 0 ? 32 : text.charCodeAt(p - 1);
  if (!(before === 32 || before === 10 || before === 47 || before === 34 || before === 39 || before === 96 || before === 59)) return undefined;
  let j = p + 2;
  while (j < text.length && j - p < 28 && isLetter(text.charCodeAt(j))) j++;
  if (j - p < 5) return undefined; // on + at least 3 letters
  if (text.charCodeAt(j) === 32) j++;
  if (text.charCodeAt(j) !== 61 /* = */) return undefined;
  j++;
  if (text.charCodeAt(j) === 32) j++;
  const q = text.charCodeAt(j);
  if (q === 34 || q === 39 || q === 96) j++;
  if (text.charCodeAt(j) === 32) j++;
  const c = text.charCodeAt(j);
  if (!(isIdentChar(c) || c === 40 || c === 91 || c === 33 || c === 126 || c === 43 || c === 45 || c === 46 || c === 92)) return undefined;
  // A quote before (`"onclick=`, `" onclick=`) means an attribute was closed to open this one.
  const b2 = before === 32 || before === 47 ? (p > 1 ? text.charCodeAt(p - 2) : 0) : before;
  return b2 === 34 || b2 === 39 || b2 === 96 ? 'attribute' : 'word';
}

/** The letters before `p`, read backwards over single spaces (`java script`, `jav ascript`): at most 24. */
function schemeBefore(text: string, p: number): string {
  let letters = '';
  for (let j = p - 1; j >= 0 && p - j < 40 && letters.length < 24; j--) {
    const c = text.charCodeAt(j);
    if (isLetter(c)) letters = text[j] + letters;
    else if (c !== 32 || j === 0 || text.charCodeAt(j - 1) === 32) break;
  }
  return letters;
}

export function xssSignals(text: string, mask: number, hit: (id: string) => void): void {
  let firstTag = -1;
  if (mask & LT) {
    if (SCRIPT_TAG.test(text)) hit('script_tag');
    if (TAG_BREAKOUT.test(text)) hit('tag_breakout');
    for (let p = text.indexOf('<'); p >= 0; p = text.indexOf('<', p + 1)) {
      let j = p + 1;
      if (text.charCodeAt(j) === 47) j++;
      const start = j;
      while (j < text.length && j - start < 16 && isLetter(text.charCodeAt(j))) j++;
      const name = text.slice(start, j);
      if (DANGEROUS_TAGS.has(name)) hit('dangerous_tag');
      else if (MARKUP_TAGS.has(name)) hit('markup_tag');
      if (name !== '' && firstTag < 0) firstTag = p;
    }
  }
  // A handler needs `=`; a script URL `:`; a call `(` or a backtick.
  for (let o = mask & EQ ? text.indexOf('on') : -1; o >= 0; o = text.indexOf('on', o + 2)) {
    const kind = handlerAt(text, o);
    if (kind === undefined) continue;
    hit(kind === 'attribute' ? 'handler_attribute' : 'handler_word');
    // In a tag: <img src=x onerror=...>, <svg/onload=...>, <x onclick=...>.
    if (firstTag >= 0 && firstTag < o) hit('handler_in_tag');
  }
  for (let p = mask & COLON ? text.indexOf(':') : -1; p >= 0; p = text.indexOf(':', p + 1)) {
    const scheme = schemeBefore(text, p);
    if (SCRIPT_SCHEMES.some((s) => scheme.endsWith(s))) {
      const after = text.charCodeAt(p + 1);
      if (p + 1 < text.length && after !== 32 && after !== 10) hit('script_url');
      else if (SPACED_SCRIPT_CALL.test(text.slice(p + 1, p + 40))) hit('script_url_spaced');
    } else if (scheme.endsWith('data')) {
      const rest = text.slice(p + 1, p + 32).trimStart();
      if (DATA_TYPES.some((t) => rest.startsWith(t))) hit('data_url');
    }
  }
  for (let p = mask & (PAREN | BACKTICK) ? 0 : text.length; p < text.length; p++) {
    const c = text.charCodeAt(p);
    if (c !== 40 && c !== 96) continue;
    let e = p;
    if (e > 0 && text.charCodeAt(e - 1) === 32) e--;
    let b = e;
    while (b > 0 && e - b < 16 && isIdentChar(text.charCodeAt(b - 1))) b--;
    if (b === e || !SINKS.has(text.slice(b, e))) continue;
    hit('sink_call');
    // A string closed, an operator, then the sink: '-alert(1)-'   ";alert(1)//   '}};alert(1)
    let k = b - 1;
    if (k >= 0 && text.charCodeAt(k) === 46) continue; // window.alert: a member, see dom_access
    if (k >= 0 && text.charCodeAt(k) === 32) k--;
    let ops = 0;
    while (k >= 0 && ops < 2 && '-+*/|&^,;)'.includes(text[k]!)) {
      k--;
      ops++;
    }
    if (ops === 0) continue;
    for (let skip = 0; k >= 0 && skip < 3 && ' );}]'.includes(text[k]!); skip++) k--;
    const q = k >= 0 ? text.charCodeAt(k) : 0;
    if (q === 34 || q === 39 || q === 96) hit('breakout_sink');
  }
  if (hasAny(text, DOM_ACCESS)) hit('dom_access');
  if (hasAny(text, CSS_EXPRESSIONS)) hit('css_expression');
  for (const name of mask & EQ ? ATTRIBUTE_SINKS : []) {
    const p = text.indexOf(name);
    if (p < 0) continue;
    const after = text.charCodeAt(p + name.length) === 32 ? p + name.length + 1 : p + name.length;
    if (text.charCodeAt(after) === 61) hit('attribute_sink');
  }
  for (let p = mask & BRACE ? text.indexOf('{{') : -1; p >= 0; p = text.indexOf('{{', p + 2)) {
    const window = text.slice(p + 2, p + 64);
    if (TEMPLATE_PAYLOADS.some((t) => window.includes(t))) hit('template_escape');
  }
}
