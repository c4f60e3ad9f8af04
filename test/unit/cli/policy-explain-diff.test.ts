import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { meshgateInProcess as meshgate } from '../../helpers/meshgate-cli.ts';
import { BILLING, FRONTEND, IDP, writePolicySets, writeVersionsSet } from '../policy-tools/explain-fixtures.ts';

describe('meshgate policy explain and diff', () => {
  let dir: string;
  let sets: { old: string; new: string };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshgate-explain-cli-'));
    const { publicKey } = await generateKeyPair('ES256');
    sets = await writePolicySets(dir, { ...(await exportJWK(publicKey)), kid: 'e1' });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const explain = (...args: string[]) => meshgate(['policy', 'explain', '--policies', sets.new, '--to', 'orders.shop', ...args]);

  it('prints ALLOW and the trail, exit 0; invalid documents on stderr', async () => {
    const { code, stdout, stderr } = await meshgate(['policy', 'explain', '--policies', sets.old, '--from', FRONTEND, '--to', 'orders.shop', '--method', 'GET', '--path', '/orders/1']);
    expect(code).toBe(0);
    expect(stdout.split('\n')).toEqual([
      'ALLOW',
      '  ip-access not evaluated (no --ip)',
      '  authn     not evaluated (no --jwt or --claims): no request principal',
      '  authz     ALLOW enforce shop/allow-frontend#frontend-orders matched <- decides',
      '  authz     ALLOW enforce shop/allow-frontend#idp-reports no match',
      '  authz     DENY  enforce shop/deny-admin#admin no match',
      '',
    ]);
    expect(stderr).toMatch(/typo\.yaml: document 0 \(AuthorizationPolicy\/shop\/typo\): spec\.action: /);
  });

  it('prints DENY (code) by rule, exit 1', async () => {
    const denied = await explain('--from', FRONTEND, '--method', 'POST', '--path', '/orders/%2e%2e/orders/7', '--header', 'x-env=prod');
    expect(denied.code).toBe(1);
    expect(denied.stdout.split('\n')[0]).toBe('DENY (authz.denied) by shop/deny-admin#no-writes');
    expect(denied.stdout).toContain('normalized /orders/%2e%2e/orders/7 -> /orders/7');
    const ip = await explain('--from', BILLING, '--path', '/orders/1', '--ip', '203.0.113.4');
    expect({ code: ip.code, first: ip.stdout.split('\n')[0] }).toEqual({ code: 1, first: 'DENY (ip.denied) by shop/blocklist#deny' });
  });

  it('takes --claims as the verified request principal, and prints JSON with --json', async () => {
    const { code, stdout } = await explain('--path', '/reports/q', '--claims', JSON.stringify({ iss: IDP, sub: 'alice' }), '--json');
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toMatchObject({ verdict: 'ALLOW', allow: true, code: null, rule: 'shop/allow-frontend#idp-reports', path: '/reports/q' });
  });

  it('--at: what a call pinned to a version gets on a given date', async () => {
    const versions = await writeVersionsSet(dir);
    const ask = (when: string) =>
      meshgate(['policy', 'explain', '--policies', versions, '--from', FRONTEND, '--to', 'orders.shop', '--path', '/orders/1', '--header', 'x-meshgate-version=v1', '--at', when]);
    const monday = await ask('2026-05-04');
    expect(monday.code).toBe(0);
    expect(monday.stdout.split('\n').slice(0, 2)).toEqual([
      'ALLOW',
      '  version   shop/orders-versions#v1 answers at 2026-05-04T00:00:00.000Z; next brown-out 2026-05-05T10:00:00.000Z to 2026-05-05T11:00:00.000Z',
    ]);
    const tuesday = await ask('2026-05-05T10:15:00+00:00');
    expect(tuesday.code).toBe(1);
    expect(tuesday.stdout.split('\n')).toEqual([
      'DENY (route.version_brownout) by shop/orders-versions#v1',
      '  version   shop/orders-versions#v1 route.version_brownout: version v1 of orders.shop is browned out until 2026-05-05T11:00:00.000Z before it is retired: use version v2 (x-meshgate-version: v2); see https://docs.example/orders/v2 <- decides',
      '',
    ]);
    expect(await ask('next tuesday')).toEqual({
      code: 2,
      stdout: '',
      stderr: 'meshgate policy explain: --at: expected an ISO 8601 date like 2026-06-30 or 2026-06-30T10:00:00Z, got "next tuesday"\n',
    });
  });

  it.each([
    ['no --policies', ['policy', 'explain', '--to', 'orders', '--path', '/'], 'meshgate policy explain: missing --policies DIR\n'],
    [
      'a bad --to',
      ['policy', 'explain', '--policies', '.', '--to', 'Orders', '--path', '/'],
      'meshgate policy explain: --to: expected SERVICE or SERVICE.NAMESPACE (lower-case DNS labels), got "Orders"\n',
    ],
    [
      'bad --claims',
      ['policy', 'explain', '--policies', '.', '--to', 'orders', '--path', '/', '--claims', '[1]'],
      'meshgate policy explain: --claims: expected a JSON object, e.g. {"iss":"https://idp.example","sub":"alice"}\n',
    ],
    ['a bad --ip', ['policy', 'explain', '--policies', '.', '--to', 'orders', '--path', '/', '--ip', 'x'], 'meshgate policy explain: --ip: expected an IPv4 or IPv6 address, got "x"\n'],
    ['a missing folder', ['policy', 'explain', '--policies', '/nonexistent/p', '--to', 'orders', '--path', '/'], 'meshgate policy explain: --policies /nonexistent/p: no such folder\n'],
    ['no --requests', ['policy', 'diff', '--old', 'a', '--new', 'b'], 'meshgate policy diff: missing --requests ACCESS_LOG\n'],
  ])('exits 2 with one line on a usage error: %s', async (_name, args, stderr) => {
    expect(await meshgate(args)).toEqual({ code: 2, stdout: '', stderr });
  });

  it('diff: lists changed calls and exits 1; exits 0 when nothing changed', async () => {
    const log = join(dir, 'access.log');
    const base = { direction: 'inbound', method: 'GET', authority: 'orders.shop', path: '/orders/1', source_address: '10.0.0.5', source_principal: FRONTEND, destination_service: 'orders.shop' };
    await writeFile(log, [JSON.stringify(base), JSON.stringify({ ...base, method: 'POST' }), 'garbage', ''].join('\n'));
    const changed = await meshgate(['policy', 'diff', '--old', sets.old, '--new', sets.new, '--requests', log]);
    expect(changed.code).toBe(1);
    expect(changed.stdout.split('\n')).toEqual([
      `allow -> deny  POST /orders/1  ${FRONTEND} -> orders.shop  (old: shop/allow-frontend#frontend-orders; new: shop/deny-admin#no-writes)  [line 2]`,
      '2 calls replayed, 1 changed (1 line skipped: 1 not JSON, 0 not inbound)',
      '',
    ]);
    const same = await meshgate(['policy', 'diff', '--old', sets.new, '--new', sets.new, '--requests', log]);
    expect({ code: same.code, stdout: same.stdout }).toEqual({ code: 0, stdout: '2 calls replayed, 0 changed (1 line skipped: 1 not JSON, 0 not inbound)\n' });
  });

  it('has --help for each subcommand', async () => {
    expect((await meshgate(['policy', 'explain', '--help'])).stdout).toMatch(/^Usage: meshgate policy explain --policies DIR/);
    expect((await meshgate(['policy', 'diff', '--help'])).stdout).toMatch(/^Usage: meshgate policy diff --old DIR --new DIR --requests ACCESS_LOG/);
    expect((await meshgate(['policy', 'check', '--help'])).stdout).toMatch(/^Usage: meshgate policy check DIR\|FILE\n/);
  });
});
