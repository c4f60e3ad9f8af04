import { describe, expect, it } from 'vitest';
import type { SidecarConfig } from '../../../../src/config/sidecar-schema.ts';
import type { Filter } from '../../../../src/core/filter.ts';
import type { WorkloadCredentials } from '../../../../src/identity/cert-manager.ts';
import type { EffectiveSnapshot } from '../../../../src/sidecar/policy/subscriber.ts';
import type { PolicyEnforcement } from '../../../../src/sidecar/policy-enforcement.ts';
import { createRelayedCertificateManager, createRelayedPolicy } from '../../../../src/sidecar/workers/relayed.ts';
import { createLogger } from '../../../../src/telemetry/logger.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';

const logger = createLogger({ level: 'silent', name: 'test' });

/** Only what the manager reads: the dates and the serial (a worker never parses the PEM). */
function credentials(serial: string, notAfterMs: number): WorkloadCredentials {
  return {
    keyPem: 'key',
    chainPem: ['leaf'],
    trustBundlePem: ['root'],
    facts: { serial, notBefore: new Date(notAfterMs - 60_000), notAfter: new Date(notAfterMs), spiffeId: undefined, fingerprint256: '' },
  };
}

describe("a worker's certificate from its primary", () => {
  it('hands every rotation to its listeners and is valid exactly while the certificate is', () => {
    const clock = createFakeClock(Date.now());
    const manager = createRelayedCertificateManager(credentials('01', clock.now() + 10_000), { clock, logger });
    const rotated: string[] = [];
    manager.onRotate((c) => rotated.push(c.facts.serial));
    expect(manager.valid()).toBe(true);
    clock.advance(10_000);
    expect(manager.valid()).toBe(false); // the primary could not renew: this worker fails closed at the same instant
    manager.install(credentials('02', clock.now() + 10_000));
    expect(rotated).toEqual(['02']);
    expect(manager.current().facts.serial).toBe('02');
    expect(manager.valid()).toBe(true);
    expect(manager.stats().issued).toBe(2);
  });

  it('tells its expiry listeners when the certificate runs out with no successor', async () => {
    const clock = { now: () => Date.now(), monotonic: () => performance.now() };
    const manager = createRelayedCertificateManager(credentials('01', Date.now() + 30), { clock, logger });
    await new Promise<void>((resolve) => manager.onExpire(resolve));
    expect(manager.valid()).toBe(false);
  });
});

describe("a worker's policy from its primary", () => {
  const snapshot = (version: string): EffectiveSnapshot => ({ version, receivedAt: 1, source: 'server', documents: [], services: [], refused: [] });
  function enforcement(opts: { failOn?: string } = {}) {
    let inForce: EffectiveSnapshot | undefined;
    const calls: string[] = [];
    const fake: PolicyEnforcement = {
      install(s) {
        if (s.version === opts.failOn) throw new Error('does not compile');
        calls.push(`install ${s.version}`);
        inForce = s;
      },
      distrustCopy: () => void calls.push('distrust'),
      inboundFilters: (): readonly Filter[] => [],
      inForce: () => inForce,
    };
    return { fake, calls };
  }
  const config = (onNoPolicy: 'allow' | 'deny') => ({ policy: { onNoPolicy } }) as unknown as SidecarConfig;

  it('installs each state it is sent, and is ready as a single sidecar would be in that state', () => {
    const { fake, calls } = enforcement();
    const policy = createRelayedPolicy(config('deny'), fake, { kind: 'none', distrustedCopy: false }, logger);
    expect(policy.ready()).toMatchObject({ ok: false, state: 'no-policy' });
    policy.apply({ kind: 'snapshot', snapshot: snapshot('v1') });
    expect(policy.ready()).toMatchObject({ ok: true, state: 'ok' });
    expect(calls).toEqual(['install v1']);
    expect(policy.persisted()).toBeUndefined(); // the primary's to report
  });

  it('admits nothing while the primary distrusts its disk copy, even with onNoPolicy: allow', () => {
    const { fake, calls } = enforcement();
    const policy = createRelayedPolicy(config('allow'), fake, { kind: 'none', distrustedCopy: true }, logger);
    expect(calls).toEqual(['distrust']);
    expect(policy.ready()).toMatchObject({ ok: false });
  });

  it('keeps the chain in force when a snapshot does not install', () => {
    const { fake } = enforcement({ failOn: 'v2' });
    const policy = createRelayedPolicy(config('deny'), fake, { kind: 'snapshot', snapshot: snapshot('v1') }, logger);
    policy.apply({ kind: 'snapshot', snapshot: snapshot('v2') });
    expect(fake.inForce()?.version).toBe('v1');
  });
});
