import { describe, expect, it } from 'vitest';
import { isFieldText } from '../../../src/proxy/h1-message-parser.ts';

/*
 * What a field value or reason phrase may hold, read two ways: a whole value
 * (one that is about to be written) and a range of a head being parsed. A
 * character one way lets through and the other refuses would split a message
 * on one path only.
 */
describe('field text', () => {
  it('is the same rule for a whole value and for a range of a head: HTAB, visible ASCII, space and obs-text only', () => {
    const disagree: string[] = [];
    for (let c = 0; c <= 0xffff; c++) {
      const char = String.fromCharCode(c);
      const allowed = c === 9 || (c >= 32 && c !== 127 && c <= 255);
      const whole = isFieldText(`a${char}b`);
      const range = isFieldText(`:a${char}b\r\n`, 1, 4);
      if (whole !== allowed || range !== allowed) disagree.push(`U+${c.toString(16).padStart(4, '0')}: whole ${whole}, range ${range}`);
    }
    expect(disagree).toEqual([]);
    expect(isFieldText('')).toBe(true);
    expect(isFieldText('caf\u00e9 \t ok')).toBe(true);
  });
});
