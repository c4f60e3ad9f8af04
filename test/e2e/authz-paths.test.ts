import http from 'node:http';
import https from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkloadCredentials } from '../../src/identity/cert-manager.ts';
import { eventually } from '../helpers/eventually.ts';
import type { Mesh } from '../helpers/mesh.ts';
import { FRONTEND, startMesh } from '../helpers/mesh.ts';
import { policyYaml } from '../helpers/policy-yaml.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';

/*
 * Path tricks end to end: frontend's app -> frontend sidecar (outbound) ->
 * mTLS -> orders sidecar (inbound) -> orders app. orders admits frontend on
 * /public/* only and denies /admin*. Every trick is either refused (400
 * request.invalid_path) or denied (403 authz.denied), and the app never
 * receives a path outside /public/. The same tricks sent straight to the
 * inbound listener (with frontend's certificate) show that the inbound side
 * normalizes on its own too, not only because the outbound side did.
 */

const policies = [
  policyYaml('AuthorizationPolicy', 'frontend-public', { selector: { services: ['orders'] }, rules: [{ name: 'public', from: [{ principals: [FRONTEND] }], to: [{ paths: ['/public/*'] }] }] }),
  policyYaml('AuthorizationPolicy', 'no-admin', { selector: { services: ['orders'] }, action: 'DENY', rules: [{ name: 'admin', to: [{ paths: ['/admin*'] }] }] }),
].join('---\n');

interface Reply {
  status: number;
  body: Record<string, unknown>;
}

const DENIED_BY_RULE = { status: 403, body: { code: 'authz.denied', rule: 'shop/no-admin#admin' } };
const DENIED_BY_DEFAULT = { status: 403, body: { code: 'authz.denied', reason: 'no ALLOW rule matches' } };
const REFUSED = { status: 400, body: { code: 'request.invalid_path' } };

const TRICKS: Array<[string, { status: number; body: Record<string, unknown> }]> = [
  ['/public/../admin', DENIED_BY_RULE],
  ['/public/%2e%2e/admin', DENIED_BY_RULE],
  ['/public/%2E%2E/admin/users', DENIED_BY_RULE],
  ['/public/.%2e/admin', DENIED_BY_RULE],
  ['/public/%2e%2e%2fadmin', REFUSED],
  ['/public/..%2Fadmin', REFUSED],
  ['/public%2F..%2Fadmin', REFUSED],
  ['/public/..%5Cadmin', REFUSED],
  ['/public/..\\admin', REFUSED],
  ['/public/%252e%252e/admin', REFUSED],
  ['/public/%25%32%65%25%32%65/admin', REFUSED],
  ['//admin', DENIED_BY_RULE],
  ['///admin//x', DENIED_BY_RULE],
  ['/ADMIN', DENIED_BY_DEFAULT],
  ['/Admin/users', DENIED_BY_DEFAULT],
  ['/admin;jsessionid=1', DENIED_BY_RULE],
  ['/admin;x=1/users', DENIED_BY_RULE],
  ['/public;x=1/../admin', DENIED_BY_RULE],
  ['/public/..;/admin', REFUSED],
  ['/public/.;/../admin', REFUSED],
  ['/public/%00/../admin', REFUSED],
  ['/public/..#/admin', REFUSED],
  ['/%61dmin', DENIED_BY_RULE],
];

describe('path tricks through two sidecars', () => {
  let mesh: Mesh;
  let orders: TestSidecar;
  let frontend: TestSidecar;
  let frontendId: WorkloadCredentials;
  const received: string[] = [];

  const viaMesh = (rawPath: string): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: frontend.outbound.port, path: rawPath, headers: { host: 'orders.shop' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString('utf8')));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
      });
      req.on('error', reject);
      req.end();
    });

  /** Straight to orders' inbound listener over mTLS with frontend's certificate: no outbound sidecar in between. */
  const direct = (rawPath: string): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: orders.inbound.port,
          path: rawPath,
          headers: { host: 'orders.shop' },
          key: frontendId.keyPem,
          cert: frontendId.chainPem.join('\n'),
          ca: [...frontendId.trustBundlePem],
          checkServerIdentity: () => undefined, // SPIFFE IDs are URI SANs; the sidecars check them, this test does not need to
          agent: false,
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString('utf8')));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
        },
      );
      req.on('error', reject);
      req.end();
    });

  beforeAll(async () => {
    mesh = await startMesh({
      policies: { 'shop/orders.yaml': policies },
      app: (req, res) => {
        received.push(req.url ?? '');
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ url: req.url }));
      },
      orders: { log: { level: 'info', accessLog: true } },
      // No policy of its own: a static route to orders' inbound port.
      frontend: (_base, ordersSidecar) => ({ policy: undefined, services: [{ name: 'orders', namespace: 'shop', endpoints: [{ address: `127.0.0.1:${ordersSidecar!.inbound.port}` }] }] }),
      ready: false,
    });
    ({ orders, frontend } = mesh);
    frontendId = await mesh.h.identity('shop', 'frontend');
    await eventually(() => viaMesh('/public/ready'), { until: (res) => res.status === 200, timeoutMs: 10_000, what: "viaMesh('/public/ready') to answer 200" });
  });
  afterAll(async () => {
    await mesh?.close();
  });

  it('admits the allowed path and forwards the normalized spelling', async () => {
    expect(await viaMesh('/public/x')).toEqual({ status: 200, body: { url: '/public/x' } });
    expect(await viaMesh('/public/./a/../%62c?q=%2e%2e')).toEqual({ status: 200, body: { url: '/public/bc?q=%2e%2e' } });
    expect(await viaMesh('/public/x;jsessionid=1')).toEqual({ status: 200, body: { url: '/public/x;jsessionid=1' } });
  });

  it.each(TRICKS)('through both sidecars: %s', async (rawPath, expected) => {
    const reply = await viaMesh(rawPath);
    expect(reply).toMatchObject(expected);
  });

  it.each(TRICKS)('straight to the inbound listener: %s', async (rawPath, expected) => {
    const reply = await direct(rawPath);
    expect(reply).toMatchObject(expected);
  });

  it('the app never received a path outside /public/', () => {
    expect(received.length).toBeGreaterThan(0);
    for (const url of received) expect(url).toMatch(/^\/public\//);
  });

  it('a deny body carries code, reason, decision id and rule, nothing else of the policy; the log has the trail', async () => {
    const reply = await direct('/admin/users');
    expect(Object.keys(reply.body).sort()).toEqual(['code', 'decision_id', 'reason', 'request_id', 'rule']);
    expect(reply.body).toMatchObject({ code: 'authz.denied', reason: 'denied by policy', rule: 'shop/no-admin#admin', decision_id: expect.stringMatching(/^[0-9a-z]{12}$/) });
    const id = reply.body.decision_id;
    await expect
      .poll(() => orders.logs.filter((line) => line.decision_id === id).map((line) => [line.msg, line.rule, line.path, line.source_principal]), { timeout: 2_000 })
      .toContainEqual(['authorization denied', 'shop/no-admin#admin', '/admin/users', FRONTEND]);
    const byDefault = await direct('/elsewhere');
    expect(Object.keys(byDefault.body).sort()).toEqual(['code', 'decision_id', 'reason', 'request_id']);
  });

  it('counts decisions per rule on /metrics', async () => {
    const text = await new Promise<string>((resolve, reject) => {
      http
        .get(`${orders.adminUrl}/metrics`, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString('utf8')));
          res.on('end', () => resolve(body));
        })
        .on('error', reject);
    });
    expect(text).toMatch(/meshgate_authz_decisions_total\{decision="deny",policy="shop\/no-admin",rule="admin"\} [1-9]/);
    expect(text).toMatch(/meshgate_authz_decisions_total\{decision="allow",policy="shop\/frontend-public",rule="public"\} [1-9]/);
    expect(text).toMatch(/meshgate_requests_total\{[^}]*reason="request.invalid_path"\} [1-9]/);
  });
});
