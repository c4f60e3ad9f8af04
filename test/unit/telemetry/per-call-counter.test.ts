import { describe, expect, it } from 'vitest';
import { createPerCallCounter } from '../../../src/telemetry/per-call-counter.ts';
import { Registry } from '../../../src/telemetry/prom-client.ts';
import { parsePrometheusText } from '../../helpers/prom-text.ts';

/* A counter the data path increments on every call: what a scrape reads is what prom-client's own would show. */

function decisions() {
  const registry = new Registry();
  const counter = createPerCallCounter({ name: 'test_decisions_total', help: 'h', labelNames: ['policy', 'rule', 'decision'], registers: [registry] });
  const scrape = async () => parsePrometheusText(await registry.metrics()).get('test_decisions_total')?.samples ?? [];
  return { counter, scrape };
}

describe('per-call counter', () => {
  it('a scrape shows every label set with its sum, and the next scrape adds what came since', async () => {
    const { counter, scrape } = decisions();
    for (let i = 0; i < 3; i++) counter.inc({ policy: 'shop/a', rule: 'r1', decision: 'allow' });
    counter.inc({ decision: 'allow', rule: 'r1', policy: 'shop/a' }, 2); // the same set in another order
    counter.inc({ policy: 'shop/a', rule: 'r2', decision: 'deny' });
    counter.inc({ policy: 'shop/a', decision: 'deny' }); // no rule: its own series, not rule=""
    counter.inc({ policy: 'shop/a', rule: '', decision: 'deny' });
    expect(await scrape()).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ labels: { policy: 'shop/a', rule: 'r1', decision: 'allow' }, value: 5 }),
        expect.objectContaining({ labels: { policy: 'shop/a', rule: 'r2', decision: 'deny' }, value: 1 }),
        expect.objectContaining({ labels: { policy: 'shop/a', decision: 'deny' }, value: 1 }),
        expect.objectContaining({ labels: { policy: 'shop/a', rule: '', decision: 'deny' }, value: 1 }),
      ]),
    );
    expect(await scrape()).toHaveLength(4);
    counter.labels({ policy: 'shop/a', rule: 'r1', decision: 'allow' }).inc();
    expect((await scrape()).find((s) => s.labels.rule === 'r1')?.value).toBe(6);
    expect((await counter.get()).values.find((v) => v.labels.rule === 'r2')?.value).toBe(1);
  });

  it('refuses what prom-client refuses: a label it was not given, a negative or non-finite value', () => {
    const { counter } = decisions();
    expect(() => counter.inc({ policy: 'p', rule: 'r', decision: 'allow', extra: 'x' } as never)).toThrow('Added label "extra" is not included in initial labelset');
    expect(() => counter.inc({ policy: 'p', rule: 'r', decision: 'allow' }, -1)).toThrow('It is not possible to decrease a counter');
    expect(() => counter.inc({ policy: 'p', rule: 'r', decision: 'allow' }, Number.POSITIVE_INFINITY)).toThrow('Value is not a valid number');
  });

  it('reset drops what was counted and not yet read; remove drops one label set', async () => {
    const { counter, scrape } = decisions();
    counter.inc({ policy: 'p', rule: 'r', decision: 'allow' });
    counter.reset();
    expect(await scrape()).toEqual([]);
    counter.inc({ policy: 'p', rule: 'r', decision: 'allow' });
    counter.inc({ policy: 'p', rule: 'r', decision: 'deny' });
    counter.remove({ policy: 'p', rule: 'r', decision: 'allow' });
    expect((await scrape()).map((s) => s.labels.decision)).toEqual(['deny']);
  });
});
