import { describe, expect, it } from 'vitest';
import { explainCall, formatTrail, verdictLine } from '../../../src/policy-tools/explain.ts';
import { filterDocument } from '../../helpers/filter-docs.ts';

const TENANT = `export default (call) => call.auth && call.path.startsWith('/t/' + call.auth.claims.tenant + '/') ? { allow: true } : { deny: { code: 'tenant_mismatch', reason: 'wrong tenant' } };`;

const call = (claims: Record<string, unknown>) => ({
  from: undefined,
  to: { service: 'orders', namespace: 'shop' },
  method: 'GET',
  path: '/t/acme/orders',
  claims: { iss: 'idp', sub: 'u1', ...claims },
});

describe('policy explain runs checks of your own offline', () => {
  it('shows the check that denied, with its code and reason', async () => {
    const e = await explainCall([filterDocument({ source: TENANT, stage: 'after-authn' }, { name: 'tenant' })], call({ tenant: 'globex' }), { allowWhenNoPolicy: true });
    expect(verdictLine(e)).toBe('DENY (filter.denied) by shop/tenant#tenant_mismatch');
    expect(formatTrail(e.trail)).toContain('  filter    shop/tenant#tenant_mismatch filter.denied: wrong tenant <- decides');
  });

  it('shows an allowing check, a shadow denial and the header edits for the app', async () => {
    const docs = [
      filterDocument({ source: TENANT, mode: 'shadow' }, { name: 'tenant' }),
      filterDocument({ source: `export default () => ({ headers: { set: { 'x-canary': '1' } } });`, stage: 'before-validate' }, { name: 'canary' }),
    ];
    const e = await explainCall(docs, call({ tenant: 'globex' }), { allowWhenNoPolicy: true });
    expect(e.allow).toBe(true);
    const lines = formatTrail(e.trail);
    expect(lines).toContain('  filter    shop/tenant#tenant_mismatch shadow: would deny');
    expect(lines).toContain('  filter    request to the app: set x-canary: 1');
  });

  it("shows a failing check's failure mode", async () => {
    const e = await explainCall([filterDocument({ source: 'export default () => { for (;;) {} };', budget: { cpuMs: 5 } }, { name: 'loop' })], call({}), { allowWhenNoPolicy: true });
    expect(verdictLine(e)).toBe('DENY (filter.user_check_failed) by shop/loop');
  });
});
