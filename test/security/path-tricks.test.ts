import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRaw } from '../helpers/raw-socket.ts';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';
import { startTestSidecar } from '../helpers/sidecar.ts';
import { policyDoc, writeSnapshot } from '../helpers/static-policy.ts';
import { watchRefusal } from './catalogue.ts';

/*
 * Issue #10, attack catalogue: spellings of a path a DENY rule forbids
 * (/admin and /admin/*), behind an ALLOW rule for every other path. The
 * request line is sent byte for byte on a raw socket (no client library
 * tidies it first). Each spelling is either denied by the rule (403
 * authz.denied) or refused as malformed (400 request.invalid_path /
 * request.malformed), logged and counted once, and never reaches the app;
 * the paths that are allowed reach the app in their normalized spelling
 * (src/core/path-normalize.ts), which is also what the rules matched.
 */

const DENIED = { status: 403, reason: 'authz.denied' } as const;
const INVALID = { status: 400, reason: 'request.invalid_path' } as const;
const MALFORMED = { status: 400, reason: 'request.malformed' } as const;

interface Reply {
  readonly status: number;
  readonly reason: string | undefined;
  readonly body: Record<string, unknown>;
}

describe('path tricks against a DENY rule on /admin', () => {
  let app: TestServer;
  let sc: TestSidecar;
  let stateDir: string;
  const received: string[] = [];

  /** One request with `target` exactly as given; the connection is closed after the answer. */
  const send = async (target: string, host = 'orders'): Promise<Reply> => {
    const conn = await connectRaw(sc.inbound.port);
    conn.write(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    const { text } = await conn.closed;
    const head = text.slice(0, text.indexOf('\r\n\r\n'));
    let body = text.slice(head.length + 4);
    if (/transfer-encoding: chunked/i.test(head)) body = body.replace(/^[0-9a-f]+\r\n/i, '').replace(/\r\n0\r\n\r\n$/, '');
    return {
      status: Number(head.slice(9, 12)),
      reason: /x-meshgate-reason: (\S+)/i.exec(head)?.[1],
      body: JSON.parse(body) as Record<string, unknown>,
    };
  };

  beforeAll(async () => {
    stateDir = await mkdtemp(path.join(tmpdir(), 'meshgate-paths-'));
    await writeSnapshot(stateDir, { service: 'orders' }, [
      policyDoc('AuthorizationPolicy', 'no-admin', { selector: { services: ['orders'] }, action: 'DENY', rules: [{ name: 'admin', to: [{ paths: ['/admin', '/admin/*'] }] }] }),
      policyDoc('AuthorizationPolicy', 'the-rest', { selector: { services: ['orders'] }, action: 'ALLOW', rules: [{ name: 'any-path', to: [{ paths: ['/*'] }] }] }),
    ]);
    app = await startHttpServer((req, res) => {
      received.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ url: req.url }));
    });
    sc = await startTestSidecar({
      workload: { service: 'orders', namespace: 'shop' },
      inbound: { app: app.url },
      policy: { servers: ['127.0.0.1:1'], stateDir },
    } as Parameters<typeof startTestSidecar>[0]);
  }, 30_000);

  afterAll(async () => {
    await sc?.drain(100);
    await app?.close();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  it.each([
    ['/admin', DENIED],
    ['/admin/users', DENIED],
    ['/admin/', DENIED],
    ['/admin?x=1', DENIED],
    ['/%61dmin', DENIED],
    ['/%61%64%6D%69%6E/users', DENIED],
    ['/./admin', DENIED],
    ['/x/../admin', DENIED],
    ['/x/%2e%2e/admin', DENIED],
    ['/x/.%2E/admin/users', DENIED],
    ['//admin', DENIED],
    ['///admin//users', DENIED],
    ['/admin;param', DENIED],
    ['/admin;jsessionid=1/users', DENIED],
    ['/admin/%2e%2e/admin/users', DENIED],
    ['/admin%2fsecret', INVALID],
    ['/admin%2Fsecret', INVALID],
    ['/admin%5csecret', INVALID],
    ['/admin%252f', INVALID],
    ['/%2561dmin%252e%252e', INVALID],
    ['/admin%00', INVALID],
    ['/admin%00.html', INVALID],
    ['/\\admin', INVALID],
    ['/x/..;/admin', INVALID],
    ['/x/%c0%ae%c0%ae/admin', INVALID],
    ['/%c0%ae/admin', INVALID],
    ['/x/%e0%80%ae%e0%80%ae/admin', INVALID],
    ['/admin%zz', INVALID],
    ['http://evil/admin', DENIED],
    ['http://orders/x/../admin', DENIED],
    ['admin', MALFORMED],
  ] as const)('%s: %o, logged and counted once, never reaches the app', async (target, expected) => {
    const watch = await watchRefusal(sc, [app]);
    const reply = await send(target);
    expect({ status: reply.status, reason: reply.reason }).toEqual(expected);
    expect(reply.body).toMatchObject({ code: expected.reason });
    if (expected === DENIED) expect(reply.body.rule).toBe('shop/no-admin#admin');
    await watch.refused({ ...expected, direction: 'inbound' });
  });

  it.each([
    ['/', '/'],
    ['/public/x', '/public/x'],
    ['/public/./a/../%62c?q=%2e%2e', '/public/bc?q=%2e%2e'],
    ['/administrator', '/administrator'],
    ['/admin.html', '/admin.html'],
    // The dot segment climbs out of /admin: the call is for /, which the ALLOW rule admits.
    ['/admin/%2e%2e/', '/'],
    ['/public%3Badmin', '/public%3Badmin'],
    ['/caf%c3%a9', '/caf%C3%A9'],
    // Paths are case-sensitive (RFC 3986 §6.2.2.1): /ADMIN is another resource, which the DENY rule does not name.
    ['/ADMIN', '/ADMIN'],
  ])('allowed: %s reaches the app as %s, the spelling the rules matched', async (target, normalized) => {
    const before = received.length;
    const reply = await send(target);
    expect(reply.status).toBe(200);
    expect(received.slice(before)).toEqual([normalized]);
  });

  it('the app never received a path under /admin', () => {
    expect(received.length).toBeGreaterThan(0);
    for (const url of received) expect(url).not.toMatch(/^\/admin(?:[/;?]|$)/);
  });
});
