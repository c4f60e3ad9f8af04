import { describe, expect, it } from 'vitest';
import type { Clock } from '../../../src/core/clock.ts';
import { createEndpoint, type UpstreamEndpoint } from '../../../src/outbound/endpoint.ts';
import { createOutlierDetector, type OutlierDetectorOptions } from '../../../src/outbound/outlier-detector.ts';

function fakeClock(): Clock & { advance(ms: number): void } {
  let t = 1_000;
  return { now: () => t, monotonic: () => t, advance: (ms) => void (t += ms) };
}

function setup(over: Partial<OutlierDetectorOptions> = {}, n = 4) {
  const clock = fakeClock();
  const events: string[] = [];
  const detector = createOutlierDetector(
    {
      consecutive5xx: 3,
      consecutiveConnectFailures: 2,
      baseEjectionMs: 1_000,
      maxEjectionPercent: 50,
      onEject: (ep, until) => events.push(`eject ${ep.address} ${until}`),
      onReturn: (ep) => events.push(`return ${ep.address}`),
      ...over,
    },
    clock,
  );
  const eps = Array.from({ length: n }, (_, i) => createEndpoint(`10.0.0.${i}:80`));
  detector.eligible(eps); // the cluster shows the detector its endpoints before picking
  return { clock, detector, eps, events };
}

const ep0 = (eps: UpstreamEndpoint[]): UpstreamEndpoint => eps[0]!;

describe('outlier detector', () => {
  it.each([
    { kind: '5xx', record: 'record5xx', threshold: 3 },
    { kind: 'connect failure', record: 'recordConnectFailure', threshold: 2 },
  ] as const)('ejects after consecutive $kind and not before', ({ record, threshold }) => {
    const { detector, eps } = setup();
    for (let i = 0; i < threshold - 1; i++) detector[record](ep0(eps));
    expect(detector.isEjected(ep0(eps))).toBe(false);
    detector[record](ep0(eps));
    expect(detector.isEjected(ep0(eps))).toBe(true);
    expect(detector.eligible(eps)).not.toContain(ep0(eps));
    expect(detector.ejections()).toBe(1);
  });

  it('a success resets the streak', () => {
    const { detector, eps } = setup();
    detector.record5xx(ep0(eps));
    detector.record5xx(ep0(eps));
    detector.recordSuccess(ep0(eps));
    detector.record5xx(ep0(eps));
    detector.record5xx(ep0(eps));
    expect(detector.isEjected(ep0(eps))).toBe(false);
  });

  it('returns the endpoint after the cool-down and doubles the next one', () => {
    const { clock, detector, eps, events } = setup();
    const ep = ep0(eps);
    const ejectFor = (): number => {
      for (let i = 0; i < 3; i++) detector.record5xx(ep);
      const start = clock.monotonic();
      let waited = 0;
      while (detector.isEjected(ep)) {
        clock.advance(250);
        waited += 250;
      }
      expect(ep.ejectedUntil).toBe(0);
      expect(clock.monotonic() - start).toBe(waited);
      return waited;
    };
    expect([ejectFor(), ejectFor(), ejectFor()]).toEqual([1_000, 2_000, 4_000]);
    expect(events.filter((e) => e.startsWith('return'))).toHaveLength(3);
    expect(events[0]).toBe('eject 10.0.0.0:80 2000');
  });

  it('caps the doubling at 16x', () => {
    const { clock, detector, eps } = setup({ consecutive5xx: 1 });
    const ep = ep0(eps);
    let last = 0;
    for (let i = 0; i < 7; i++) {
      detector.record5xx(ep);
      last = ep.ejectedUntil - clock.monotonic();
      clock.advance(last);
      detector.isEjected(ep);
    }
    expect(last).toBe(16_000);
  });

  it('ignores failures reported while ejected', () => {
    const { detector, eps } = setup({ consecutive5xx: 1 });
    detector.record5xx(ep0(eps));
    const until = ep0(eps).ejectedUntil;
    detector.record5xx(ep0(eps));
    expect(ep0(eps).ejectedUntil).toBe(until);
    expect(detector.ejections()).toBe(1);
  });

  it.each([
    { percent: 50, n: 4, ejected: 2 },
    { percent: 50, n: 3, ejected: 1 },
    { percent: 10, n: 4, ejected: 0 },
    { percent: 0, n: 4, ejected: 0 },
    { percent: 100, n: 4, ejected: 4 },
  ])('honours maxEjectionPercent $percent over $n endpoints', ({ percent, n, ejected }) => {
    const { detector, eps } = setup({ maxEjectionPercent: percent, consecutive5xx: 1 }, n);
    for (const ep of eps) detector.record5xx(ep);
    expect(eps.filter((ep) => detector.isEjected(ep))).toHaveLength(ejected);
    expect(detector.ejections()).toBe(ejected);
  });

  it.each([
    { name: 'all ejected: the healthy ones', healthy: [true, true, false], expected: [0, 1] },
    { name: 'none healthy: all of them', healthy: [false, false, false], expected: [0, 1, 2] },
  ])('panic mode returns $name', ({ healthy, expected }) => {
    const { detector, eps } = setup({ maxEjectionPercent: 100, consecutive5xx: 1 }, 3);
    eps.forEach((ep, i) => (ep.healthy = healthy[i]!));
    detector.record5xx(eps[0]!);
    detector.record5xx(eps[1]!);
    expect(detector.eligible(eps)).toEqual(expected.map((i) => eps[i]));
    expect(detector.panics()).toBe(1);
  });

  it('excludes unhealthy endpoints outside panic mode', () => {
    const { detector, eps } = setup();
    eps[1]!.healthy = false;
    expect(detector.eligible(eps)).toEqual([eps[0], eps[2], eps[3]]);
    expect(detector.panics()).toBe(0);
  });
});
