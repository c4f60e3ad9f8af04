import pino from 'pino';
import type { CallContext } from '../core/call-context.ts';
import type { Random } from '../core/clock.ts';
import type { Logger } from './logger.ts';

export interface CallOutcome {
  readonly status: number;
  /** meshgate reason code when meshgate answered instead of the upstream. */
  readonly reason: string | undefined;
  readonly durationMs: number;
  /** Request body bytes received from the caller. */
  readonly bytesIn: number;
  /** Response body bytes sent to the caller. */
  readonly bytesOut: number;
  /** Trace of the call, when tracing is on. */
  readonly traceId?: string | undefined;
  readonly spanId?: string | undefined;
}

export type AccessLog = (call: CallContext, outcome: CallOutcome) => void;

export interface AccessLogOptions {
  readonly enabled: boolean;
  /** Share of successful calls logged, 0 to 1. Errors (status >= 400, or a meshgate reason) are always logged. */
  readonly sampling: number;
  readonly random: Random;
}

/**
 * One JSON line per call, under its own `log: access` binding: `log.level`
 * governs the process's own messages, `log.accessLog` and its sampling govern
 * these. Fields are picked one by one: headers are never dumped, so an
 * Authorization header, a cookie or a token cannot leak here, and the path is
 * logged without its query string (where tokens travel too).
 *
 * The line is put together here and handed to the process logger's own
 * destination, not passed to pino as an object: pino's serialiser is generic
 * (it walks the object key by key, looks up serialisers and escapes strings
 * in JavaScript): a median of 3.4 µs of CPU per line (3.1-5.4), against
 * 1.9 µs (1.6-4.4) for these fixed fields (200 000 lines into /dev/null,
 * background writes included, nine rounds in three alternating runs), on
 * every call of every sidecar. The
 * line is pino's own shape (level, time, the logger's bindings, then the
 * fields; undefined ones left out) and goes through the same destination, so
 * batching, the drop counter and the flush at exit are unchanged.
 */
export function createAccessLog(logger: Logger, opts: AccessLogOptions): AccessLog {
  if (!opts.enabled) return () => {};
  // Its own level: an operator who quiets the process log to `warn` keeps the access log.
  // No redaction pass: the fields below are picked one by one and never hold a header map, a key or
  // a token, and the process logger's wildcard paths would cost ~40% of each line (npm run bench:telemetry).
  const log = logger.child({ log: 'access' }, { level: 'info', redact: [] });
  const sampling = Number.isFinite(opts.sampling) ? Math.min(1, Math.max(0, opts.sampling)) : 1;
  const random = opts.random;
  const sampled = (outcome: CallOutcome): boolean => sampling >= 1 || outcome.status >= 400 || outcome.reason !== undefined || random() < sampling;
  const destination = (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as { write(line: string): unknown } | undefined;
  const bindings = (log as unknown as Record<symbol, unknown>)[pino.symbols.chindingsSym];
  // Every pino logger has both; a logger without them is a programming error, caught at start-up.
  if (typeof destination?.write !== 'function' || typeof bindings !== 'string') throw new Error('the access log needs a pino logger with a destination');
  const prefix = `{"level":${pino.levels.values.info},"time":"`;
  const clock = isoClock();
  return (call, outcome) => {
    if (!sampled(outcome)) return;
    const a = call.annotations;
    // Built by concatenation: no per-call object or array beyond the line itself.
    let line = `${prefix}${clock()}"${bindings},"direction":"${call.direction}","method":${str(call.method)},"authority":${str(call.authority)},"path":${str(call.path)}`;
    line += `,"protocol":"${call.httpVersion === '2' ? 'HTTP/2' : 'HTTP/1.1'}","status":${num(outcome.status)}${opt('reason', outcome.reason)}`;
    line += `,"duration_ms":${millis(outcome.durationMs)},"bytes_in":${num(outcome.bytesIn)},"bytes_out":${num(outcome.bytesOut)}`;
    line += `,"source_address":${str(call.source.address)}${opt('source_principal', call.source.principal)}`;
    if (call.destination.service !== '') line += `,"destination_service":${str(`${call.destination.service}.${call.destination.namespace}`)}`;
    line += `${opt('user_agent', call.headers['user-agent'])},"request_id":${str(call.id)}${opt('trace_id', outcome.traceId)}${opt('span_id', outcome.spanId)}`;
    line += `${opt('decision', a.decision)}${opt('rule', a.rule)}${opt('decision_id', a.decisionId)}${opt('ratelimit', a.rateLimit)}`;
    if (a.shadowDenials !== undefined) line += `,"shadow_denials":${JSON.stringify(a.shadowDenials)}`;
    line += `${opt('route', a.route)}${opt('version', a.version)}${opt('upstream', a.upstream)},"retries":${num(a.retries)}${opt('cache', a.cache)}}\n`;
    destination.write(line);
  };
}

/**
 * The current time as ISO 8601 (Date#toISOString's text), read once per call. The date and time of
 * day are formatted once per second (toISOString, ~1 µs); each new millisecond only appends its
 * digits, since a busy sidecar logs a few calls in each millisecond and a new one nearly every call.
 */
export function isoClock(now: () => number = Date.now): () => string {
  let second = Number.NaN;
  let secondText = ''; // "2026-12-07T10:38:36."
  let at = Number.NaN;
  let text = '';
  return () => {
    const t = now();
    if (t === at) return text;
    at = t;
    const ms = t % 1000;
    if (t - ms !== second || ms < 0) {
      // A new second (or a time before 1970, whose remainder is negative): formatted whole.
      text = new Date(t).toISOString();
      second = ms < 0 ? Number.NaN : t - ms;
      secondText = text.slice(0, -4);
      return text;
    }
    text = `${secondText}${threeDigits(ms)}Z`;
    return text;
  };
}

/** What JSON must escape in a string: a quote, a backslash, a control character, and (well-formed JSON.stringify) a surrogate. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * A string as JSON. Most values (methods, paths, addresses, IDs) need no
 * escaping: quoted as they are, the same text JSON.stringify gives, without
 * its call into the runtime (~a dozen per line).
 */
function str(value: string): string {
  return NEEDS_ESCAPE.test(value) ? JSON.stringify(value) : `"${value}"`;
}

function num(value: number): string {
  return Number.isFinite(value) ? String(value) : 'null';
}

/**
 * Milliseconds rounded to the microsecond, as JSON: the text String(Math.round(ms * 1000) / 1000)
 * gives, put together from the whole microseconds instead. V8 turns a fraction into text with its
 * shortest-round-trip algorithm, ~1 µs of CPU per line in a profile of a mesh sidecar (one call per
 * line); a whole number is formatted from a cache. The same text: the quotient of two integers
 * below 2^53 is the double nearest to that decimal, and no shorter decimal reads back as it.
 */
export function millis(ms: number): string {
  const micros = Math.round(ms * 1000);
  if (!(micros >= 0 && micros <= Number.MAX_SAFE_INTEGER)) return num(micros / 1000); // never from a monotonic clock
  const frac = micros % 1000;
  const whole = (micros - frac) / 1000;
  if (frac === 0) return String(whole);
  // Three digits, then without trailing zeros: 0.5 ms is "0.5", as String writes it.
  const digits = threeDigits(frac);
  return `${whole}.${frac % 10 !== 0 ? digits : frac % 100 !== 0 ? digits.slice(0, 2) : digits.slice(0, 1)}`;
}

/** 0-999 as three digits, zeros in front: the milliseconds of a time, the thousandths of a duration. */
function threeDigits(n: number): string {
  return n < 10 ? `00${n}` : n < 100 ? `0${n}` : String(n);
}

function opt(name: string, value: string | undefined): string {
  return value === undefined ? '' : `,"${name}":${str(value)}`;
}
