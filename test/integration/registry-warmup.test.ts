import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkloadCredentials } from '../../src/identity/cert-manager.ts';
import type { PolicyHarness } from './policy-server-harness.ts';
import { createPolicyHarness } from './policy-server-harness.ts';

/*
 * The policy server's registry warm-up on the wire: snapshots sent in the
 * first registry.warmup after start carry registry_warming (and a version of
 * their own), and its end reaches every stream even when nothing changed.
 */

describe('registry warm-up', () => {
  let h: PolicyHarness;
  let frontend: WorkloadCredentials;

  beforeAll(async () => {
    h = await createPolicyHarness();
    frontend = await h.identity('shop', 'frontend');
  });
  afterAll(async () => {
    await h?.close();
  });

  it('flags snapshots during the warm-up, then pushes the same content unflagged under its plain version', async () => {
    const ps = await h.start({ registry: { warmup: '400ms' } });
    try {
      const sub = ps.subscribe(frontend, { sidecarId: 'frontend-1' });
      const first = await sub.next();
      expect(first.registryWarming).toBe(true);
      expect(first.version).toMatch(/^[0-9a-f]{16}-warming$/);
      const after = await sub.next(5_000);
      expect(after.registryWarming).toBe(false);
      expect(after.version).toBe(first.version.replace(/-warming$/, ''));
      expect(after.services).toEqual(first.services);
      expect(ps.logs.some((l) => l.msg === 'registry warm-up over: snapshots now list the registry as complete')).toBe(true);
      sub.close();
    } finally {
      await ps.close();
    }
  });

  it('warmup 0 sends a complete registry from the first snapshot', async () => {
    const ps = await h.start({ registry: { warmup: '0s' } });
    try {
      const sub = ps.subscribe(frontend, { sidecarId: 'frontend-2' });
      const first = await sub.next();
      expect(first.registryWarming).toBe(false);
      expect(first.version).toMatch(/^[0-9a-f]{16}$/);
      sub.close();
    } finally {
      await ps.close();
    }
  });
});
