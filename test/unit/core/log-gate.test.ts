import { describe, expect, it } from 'vitest';
import { createLogGate } from '../../../src/core/log-gate.ts';
import { createFakeClock } from '../../helpers/fake-clock.ts';

describe('log gate', () => {
  it('lets one line per key per interval through, and the next one says how many were held back', () => {
    const clock = createFakeClock();
    const gate = createLogGate(clock, 1000);
    expect(gate.pass('a')).toBe(0);
    expect([gate.pass('a'), gate.pass('a'), gate.pass('a')]).toEqual([undefined, undefined, undefined]);
    expect(gate.pass('b')).toBe(0); // keys are gated apart
    clock.advance(999);
    expect(gate.pass('a')).toBeUndefined();
    clock.advance(1);
    expect(gate.pass('a')).toBe(4);
    clock.advance(5000);
    expect(gate.pass('a')).toBe(0);
    expect(gate.pass()).toBe(0); // one gate for a single kind of line
  });
});
