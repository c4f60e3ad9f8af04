import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../../src/core/call-context.ts';
import type { CallOutcome } from '../../../src/telemetry/access-log.ts';
import { createAccessLog } from '../../../src/telemetry/access-log.ts';
import { captureLogs } from '../../helpers/log-capture.ts';

const capture = (level = 'info') => captureLogs({ level, name: 'sidecar' });

const call = (): CallContext => ({
  id: 'req-1',
  direction: 'inbound',
  startedAt: 0,
  method: 'POST',
  path: '/orders',
  query: 'access_token=QUERY-SECRET',
  authority: 'orders.shop',
  headers: { authorization: 'Bearer HEADER-SECRET', cookie: 'sid=COOKIE-SECRET', 'x-api-key': 'KEY-SECRET', 'user-agent': 'curl/8' },
  httpVersion: '1.1',
  isGrpc: false,
  source: { address: '10.0.0.7', port: 5555, principal: 'spiffe://cluster.local/ns/shop/sa/frontend' },
  destination: { service: 'orders', namespace: 'shop' },
  annotations: { retries: 1, decision: 'allow', rule: 'shop/p#r', decisionId: 'd-1', rateLimit: 'allowed', upstream: '127.0.0.1:8080', version: 'v2' },
});
const ok: CallOutcome = { status: 200, reason: undefined, durationMs: 1.23456, bytesIn: 10, bytesOut: 20, traceId: 'a'.repeat(32), spanId: 'b'.repeat(16) };

describe('access log', () => {
  it('writes the documented fields and nothing from headers but the user agent', async () => {
    const { lines, logger, flushed } = capture();
    createAccessLog(logger, { enabled: true, sampling: 1, random: Math.random })(call(), ok);
    await flushed();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      log: 'access',
      time: expect.any(String),
      direction: 'inbound',
      method: 'POST',
      authority: 'orders.shop',
      path: '/orders',
      status: 200,
      duration_ms: 1.235,
      bytes_in: 10,
      bytes_out: 20,
      source_address: '10.0.0.7',
      source_principal: 'spiffe://cluster.local/ns/shop/sa/frontend',
      user_agent: 'curl/8',
      request_id: 'req-1',
      trace_id: 'a'.repeat(32),
      span_id: 'b'.repeat(16),
      decision: 'allow',
      rule: 'shop/p#r',
      decision_id: 'd-1',
      ratelimit: 'allowed',
      upstream: '127.0.0.1:8080',
      version: 'v2',
      retries: 1,
    });
    expect(JSON.stringify(lines)).not.toMatch(/SECRET/);
  });

  it('samples successful calls and always logs errors and meshgate replies', async () => {
    const { lines, logger, flushed } = capture();
    const draws = [0.9, 0.05, 0.9, 0.9, 0.9];
    const log = createAccessLog(logger, { enabled: true, sampling: 0.1, random: () => draws.shift() ?? 0.9 });
    log(call(), ok); // 0.9 >= 0.1: skipped
    log(call(), ok); // 0.05 < 0.1: logged
    log(call(), { ...ok, status: 503 });
    log(call(), { ...ok, status: 404 });
    log(call(), { ...ok, status: 200, reason: 'policy.shadow' });
    await flushed();
    expect(lines.map((l) => l.status)).toEqual([200, 503, 404, 200]);
  });

  it('is written whatever the process log level, and not at all when off', async () => {
    const quiet = capture('error');
    createAccessLog(quiet.logger, { enabled: true, sampling: 1, random: Math.random })(call(), ok);
    quiet.logger.info('process chatter');
    const off = capture();
    createAccessLog(off.logger, { enabled: false, sampling: 1, random: Math.random })(call(), ok);
    await Promise.all([quiet.flushed(), off.flushed()]);
    expect(quiet.lines.map((l) => l.log ?? l.msg)).toEqual(['access']);
    expect(off.lines).toEqual([]);
  });
});
