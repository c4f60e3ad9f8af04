import { Registry } from 'prom-client';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import type { AdminDeps, AdminServer } from '../../../src/admin/admin-server.ts';
import { createAdminServer } from '../../../src/admin/admin-server.ts';

const open: AdminServer[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

async function start(extra: Partial<AdminDeps> = {}): Promise<string> {
  const server = createAdminServer({ registry: new Registry(), readiness: () => ({ ready: true, checks: { app: 'ok' } }), configDump: () => ({ answer: 42 }), ...extra });
  open.push(server);
  const { port } = await server.listen(0, '127.0.0.1');
  return `http://127.0.0.1:${port}`;
}

async function call(url: string, method = 'GET', headers: Record<string, string> = {}) {
  const res = await request(url, { method, headers });
  return { status: res.statusCode, allow: res.headers.allow, text: await res.body.text() };
}

describe('admin listener', () => {
  it('serves /live, /ready, /config_dump; HEAD has no body', async () => {
    const base = await start();
    expect(await call(`${base}/live`)).toMatchObject({ status: 200, text: 'live\n' });
    expect(JSON.parse((await call(`${base}/ready`)).text)).toEqual({ ready: true, checks: { app: 'ok' } });
    expect(JSON.parse((await call(`${base}/config_dump`)).text)).toEqual({ answer: 42 });
    expect(await call(`${base}/live`, 'HEAD')).toMatchObject({ status: 200, text: '' });
  });

  it('answers 503 with the error when a readiness check throws', async () => {
    const base = await start({
      readiness: () => {
        throw new Error('store gone');
      },
    });
    expect(await call(`${base}/ready`)).toMatchObject({ status: 503, text: JSON.stringify({ ready: false, checks: { readiness: 'Error: store gone' } }) });
  });

  it("tries a role's routes after its own paths, and 404s what neither knows", async () => {
    const base = await start({
      routes: (req, res) => {
        if (!req.url?.startsWith('/api/')) return false;
        res.end('api');
        return true;
      },
    });
    expect(await call(`${base}/api/x`, 'PUT')).toMatchObject({ status: 200, text: 'api' });
    expect(await call(`${base}/live`, 'PUT')).toMatchObject({ status: 405, allow: 'GET, HEAD' });
    expect(await call(`${base}/other`)).toMatchObject({ status: 404 });
  });

  it('routes /bans only on a sidecar: GET lists, DELETE lifts, other methods 405 with Allow', async () => {
    const removed: string[] = [];
    const bans = { list: () => [{ address: '198.51.100.9' }], remove: (a: string) => (removed.push(a), { status: 'removed' as const, ban: { address: a } }) };
    const sidecar = await start({ bans });
    expect(JSON.parse((await call(`${sidecar}/bans`)).text)).toEqual([{ address: '198.51.100.9' }]);
    expect(await call(`${sidecar}/bans`, 'DELETE')).toMatchObject({ status: 405, allow: 'GET, HEAD' });
    expect(await call(`${sidecar}/bans/198.51.100.9`, 'GET')).toMatchObject({ status: 405, allow: 'DELETE' });
    expect(await call(`${sidecar}/bans/198.51.100.9`, 'DELETE', { origin: 'https://evil.example' })).toMatchObject({ status: 403 });
    expect(await call(`${sidecar}/bans/198.51.100.9`, 'DELETE')).toMatchObject({ status: 200 });
    expect(removed).toEqual(['198.51.100.9']);
    const other = await start();
    expect(await call(`${other}/bans`)).toMatchObject({ status: 404 });
  });
});
