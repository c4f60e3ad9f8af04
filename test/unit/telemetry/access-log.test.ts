import { Writable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../../src/core/call-context.ts';
import type { CallOutcome } from '../../../src/telemetry/access-log.ts';
import { createAccessLog, isoClock, millis } from '../../../src/telemetry/access-log.ts';
import { createLogger } from '../../../src/telemetry/logger.ts';
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

  it('writes any value a caller sends as the same JSON string: quotes, backslashes, control characters, lone surrogates', async () => {
    // Any UTF-16 code unit, weighted towards the ones JSON escapes.
    const unit = fc.oneof(
      fc.constantFrom('"', '\\', '\n', '\u0000', '\u001f', '\u007f', '\ud800', '\udc00', '\ud83d\ude00', 'é'),
      fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
      fc.constantFrom('a', '/', '-'),
    );
    const values = fc.array(fc.string({ unit, maxLength: 12 }), { minLength: 3, maxLength: 3 });
    const { lines, logger, flushed } = capture();
    const log = createAccessLog(logger, { enabled: true, sampling: 1, random: Math.random });
    const sent = fc.sample(values, 300);
    for (const [path, authority, agent] of sent) log({ ...call(), path: path!, authority: authority!, headers: { 'user-agent': agent! } }, ok);
    await flushed();
    // A lone surrogate cannot be written as UTF-8: JSON.stringify escapes it, so it reads back as it was sent.
    expect(lines.map((l) => [l.path, l.authority, l.user_agent])).toEqual(sent);
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

  it('writes the line pino writes for the same fields: order, escaping, left-out fields, the time', async () => {
    // The access log builds its line by hand for speed; pino's own output for the documented fields is the reference.
    const raw = (): { logger: ReturnType<typeof createLogger>; text: () => string; flushed: () => Promise<void> } => {
      let text = '';
      const sink = new Writable({
        write(chunk: Buffer, _enc, done) {
          text += chunk.toString('utf8');
          done();
        },
      });
      return { logger: createLogger({ level: 'info', name: 'sidecar', destination: sink }), text: () => text, flushed: () => new Promise((r) => sink.write('', () => r())) };
    };
    const odd = call();
    const tricky: CallContext = {
      ...odd,
      method: 'GET',
      path: '/caf\u00e9/"quoted"\\back\nline\u0001\u2028',
      authority: '',
      headers: { 'user-agent': 'agent "x" \t \ud83d\ude00' },
      source: { address: '::1', port: 1, principal: undefined },
      destination: { service: '', namespace: '' },
      annotations: { retries: 0, shadowDenials: ['shop/a#r1', 'shop/"b"#r2'], route: 'orders#default', cache: 'bypass:authorization' },
    };
    const outcomes: [CallContext, CallOutcome][] = [
      [call(), ok],
      [tricky, { status: 502, reason: 'upstream.reset', durationMs: Number.NaN, bytesIn: 0, bytesOut: 0 }],
      [tricky, { status: 200, reason: undefined, durationMs: 0.0004, bytesIn: 1e21, bytesOut: 3 }],
    ];
    const ours = raw();
    const log = createAccessLog(ours.logger, { enabled: true, sampling: 1, random: Math.random });
    const reference = raw();
    const pinoChild = reference.logger.child({ log: 'access' });
    for (const [c, o] of outcomes) {
      log(c, o);
      const a = c.annotations;
      pinoChild.info({
        direction: c.direction,
        method: c.method,
        authority: c.authority,
        path: c.path,
        protocol: c.httpVersion === '2' ? 'HTTP/2' : 'HTTP/1.1',
        status: o.status,
        reason: o.reason,
        duration_ms: Math.round(o.durationMs * 1000) / 1000,
        bytes_in: o.bytesIn,
        bytes_out: o.bytesOut,
        source_address: c.source.address,
        source_principal: c.source.principal,
        destination_service: c.destination.service === '' ? undefined : `${c.destination.service}.${c.destination.namespace}`,
        user_agent: c.headers['user-agent'],
        request_id: c.id,
        trace_id: o.traceId,
        span_id: o.spanId,
        decision: a.decision,
        rule: a.rule,
        decision_id: a.decisionId,
        ratelimit: a.rateLimit,
        shadow_denials: a.shadowDenials,
        route: a.route,
        version: a.version,
        upstream: a.upstream,
        retries: a.retries,
        cache: a.cache,
      });
    }
    await Promise.all([ours.flushed(), reference.flushed()]);
    const withoutTime = (text: string) =>
      text
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as Record<string, unknown>);
    const mine = withoutTime(ours.text());
    const theirs = withoutTime(reference.text());
    expect(mine).toHaveLength(3);
    for (const [i, line] of mine.entries()) {
      expect(Date.parse(line.time as string)).toBeGreaterThan(Date.now() - 60_000);
      expect(Object.keys(line)).toEqual(Object.keys(theirs[i]!)); // same fields in the same order
      expect({ ...line, time: 0 }).toEqual({ ...theirs[i], time: 0 });
    }
    expect(mine[1]).toMatchObject({ path: '/caf\u00e9/"quoted"\\back\nline\u0001\u2028', duration_ms: null, shadow_denials: ['shop/a#r1', 'shop/"b"#r2'] });
    expect(mine[1]).not.toHaveProperty('destination_service');
  });
});

describe('duration_ms', () => {
  it('is written as JSON writes the rounded milliseconds, digit for digit', () => {
    const json = (ms: number) => JSON.stringify(Math.round(ms * 1000) / 1000);
    const values = [0, 0.0004, 0.0005, 0.001, 0.01, 0.05, 0.1, 0.5, 1, 1.5, 10, 100.05, 12.3456, 999.9999, 1000, 123_456.789, 86_400_000.001, 9e12, Number.NaN, Infinity];
    // Every microsecond of the first 200 ms (where nearly all calls end), then a spread of larger values from a fixed sequence.
    for (let us = 0; us < 200_000; us++) values.push(us / 1000);
    let seed = 12345;
    for (let i = 0; i < 20_000; i++) {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      values.push((seed / 2 ** 31) * 10 ** ((i % 10) - 2));
    }
    const wrong = values.filter((ms) => millis(ms) !== json(ms)).map((ms) => `${ms}: ${millis(ms)} != ${json(ms)}`);
    expect(wrong).toEqual([]);
  });
});

describe('the access line time', () => {
  it("is Date#toISOString's text for every millisecond, across seconds, repeats and a clock that steps back", () => {
    let t = 0;
    const clock = isoClock(() => t);
    const times = [1_796_639_895_998, 1_796_639_895_998, 1_796_639_895_999, 1_796_639_896_000, 1_796_639_896_007, 1_796_639_896_070, 1_796_639_895_500, 1_796_639_896_700];
    for (let ms = 0; ms < 2_500; ms++) times.push(1_796_639_900_000 + ms);
    times.push(0, 999, 1_000, -1, -1_001, 86_399_999, 253_402_300_799_999, 253_402_300_800_000);
    const wrong: string[] = [];
    for (const at of times) {
      t = at;
      const text = clock();
      if (text !== new Date(at).toISOString()) wrong.push(`${at}: ${text}`);
    }
    expect(wrong).toEqual([]);
  });
});
