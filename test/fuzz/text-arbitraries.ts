import fc from 'fast-check';

/*
 * Text mutations the YAML-reading fuzz targets share (config files, policy
 * documents): random edits of a valid text, and the alias bomb every YAML
 * loader must refuse.
 */

/** Fragments that mean something to a YAML parser: structure, anchors and aliases, tags, odd scalars and code points. */
export const YAML_PIECES: readonly string[] = [
  '\n',
  ' ',
  '  ',
  ':',
  ': ',
  '- ',
  '{',
  '}',
  '[',
  ']',
  ',',
  '"',
  "'",
  '#',
  '&a ',
  '*a',
  '!!binary ',
  '!!set ',
  '? ',
  '|',
  '>',
  '\u0000',
  '\ufeff',
  '\u2028',
  'é',
  '\ud800',
  '~',
  'null',
  '1e400',
  '.nan',
  '__proto__',
];

/**
 * `base` with 1 to `maxEdits` edits, each at a random place: up to `maxRemove`
 * characters removed and one of `pieces` (fragments that mean something to the
 * parser) or up to `maxInsert` random characters put in their place.
 */
export function editedText(base: string, opts: { readonly pieces: readonly string[]; readonly maxRemove: number; readonly maxInsert: number; readonly maxEdits: number }): fc.Arbitrary<string> {
  return fc
    .array(fc.record({ at: fc.nat(), remove: fc.nat({ max: opts.maxRemove }), insert: fc.oneof(fc.constantFrom(...opts.pieces), fc.string({ unit: 'binary', maxLength: opts.maxInsert })) }), {
      minLength: 1,
      maxLength: opts.maxEdits,
    })
    .map((edits) => {
      let text = base;
      for (const { at, remove, insert } of edits) {
        const i = at % (text.length + 1);
        text = text.slice(0, i) + insert + text.slice(i + remove);
      }
      return text;
    });
}

/** An alias bomb's lines: `a0` a two-item list, each next anchor `width` aliases of the one before, up to `a8`. */
export function aliasBombLines(width: number): string[] {
  const lines = ['a0: &a0 [x, x]'];
  for (let i = 1; i < 9; i++) lines.push(`a${i}: &a${i} [${Array.from({ length: width }, () => `*a${i - 1}`).join(', ')}]`);
  return lines;
}
