import { describe, expect, it } from 'vitest';
import { createRetryBudget } from '../../../src/outbound/retry-budget.ts';

describe('retry budget', () => {
  it.each([
    { name: 'minConcurrency when idle', percent: 20, min: 3, active: 0, allowed: 3 },
    { name: 'the share under load', percent: 20, min: 3, active: 100, allowed: 20 },
    { name: 'a fractional share rounds up', percent: 20, min: 0, active: 11, allowed: 3 },
    { name: 'nothing with both at zero', percent: 0, min: 0, active: 1000, allowed: 0 },
  ])('caps concurrent retries at $name', ({ percent, min, active, allowed }) => {
    const budget = createRetryBudget({ percent, minConcurrency: min });
    let granted = 0;
    while (granted < 1000 && budget.tryAcquire(active)) granted++;
    expect(granted).toBe(allowed);
    expect(budget.inFlight()).toBe(allowed);
  });

  it('frees a slot when a retry ends', () => {
    const budget = createRetryBudget({ percent: 0, minConcurrency: 1 });
    expect(budget.tryAcquire(10)).toBe(true);
    expect(budget.tryAcquire(10)).toBe(false);
    budget.release();
    expect(budget.tryAcquire(10)).toBe(true);
  });

  it('an extra release mints no budget', () => {
    const budget = createRetryBudget({ percent: 0, minConcurrency: 1 });
    budget.release();
    budget.release();
    expect(budget.tryAcquire(0)).toBe(true);
    expect(budget.tryAcquire(0)).toBe(false);
  });
});
