import { request } from 'undici';
import { expect } from 'vitest';
import type { MetricFamily } from '../helpers/prom-text.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';
import type { TestSidecar } from '../helpers/sidecar.ts';

/*
 * The attack catalogue's one assertion (issue #10): a refusal is seen by the
 * caller (status or closed connection, asserted by each case), written as
 * exactly one log line with its reason code, counted by exactly one counter,
 * and the upstream saw nothing. Cases take a `watch` before the attack and
 * call `refused` after it.
 */

/** Anything that counts the requests it received (a test server, the fault proxy). */
export interface Counting {
  hits(): number;
}

/** The counter a refusal moves by one: its family and the labels that single out its series. */
interface CounterRef {
  readonly name: string;
  readonly labels: Record<string, string>;
}

interface RefusalExpectation {
  /** The reason code in the one log line (`reason` field). */
  readonly reason: string;
  /** Access-logged refusals: the status in the log line, and by default the meshgate_requests_total series counted. */
  readonly status?: number;
  readonly direction?: 'inbound' | 'outbound';
  /** The counter that must rise by exactly one; default meshgate_requests_total{direction, response_code: status, reason}. */
  readonly counter?: CounterRef;
  /** Match the log line by message too (connection-level refusals are not access lines). */
  readonly message?: RegExp;
  /** Upstream requests allowed during the case (a canary sent behind the attack); default 0. */
  readonly upstreamHits?: number;
  /** Fields the one log line also has (the path, the protocol, the caller's address). */
  readonly line?: Record<string, unknown>;
}

export interface RefusalWatch {
  /** Asserts the log line, the counter and the untouched upstream; returns the log line. */
  refused(expected: RefusalExpectation): Promise<Record<string, unknown>>;
  /** Log lines written since the watch began. */
  logsSince(): Array<Record<string, unknown>>;
}

async function scrape(sc: TestSidecar): Promise<Map<string, MetricFamily>> {
  return parsePrometheusText(await (await request(`${sc.adminUrl}/metrics`)).body.text());
}

async function counterValue(sc: TestSidecar, ref: CounterRef): Promise<number> {
  return sumOf(await scrape(sc), ref.name, ref.labels);
}

function defaultCounter(e: RefusalExpectation): CounterRef {
  if (e.status === undefined || e.direction === undefined) throw new Error(`refusal ${e.reason}: give status and direction, or the counter`);
  return { name: 'meshgate_requests_total', labels: { direction: e.direction, response_code: String(e.status), reason: e.reason } };
}

/** Starts watching `sc` and the `upstreams` behind it; call before the attack. */
export async function watchRefusal(sc: TestSidecar, upstreams: ReadonlyArray<Counting>): Promise<RefusalWatch> {
  const families = await scrape(sc);
  const logsFrom = sc.logs.length;
  const hitsBefore = upstreams.map((u) => u.hits());
  const logsSince = () => sc.logs.slice(logsFrom);
  return {
    logsSince,
    async refused(e) {
      const counter = e.counter ?? defaultCounter(e);
      const before = sumOf(families, counter.name, counter.labels);
      // The log line and the counter are written as the refusal is made, which may trail the caller's view by a turn.
      await expect.poll(async () => (await counterValue(sc, counter)) - before, { timeout: 3000 }).toBe(1);
      const matching = (): Array<Record<string, unknown>> =>
        logsSince().filter(
          (l) =>
            l.reason === e.reason &&
            (e.message === undefined || e.message.test(String(l.msg))) &&
            (e.direction === undefined || l.direction === undefined || l.direction === e.direction || l.listener === e.direction),
        );
      await expect.poll(() => matching().length, { timeout: 3000 }).toBe(1);
      const line = matching()[0]!;
      if (e.status !== undefined && line.log === 'access') expect(line.status).toBe(e.status);
      if (e.line) expect(line).toMatchObject(e.line);
      expect(upstreams.reduce((sum, u, i) => sum + u.hits() - hitsBefore[i]!, 0)).toBe(e.upstreamHits ?? 0);
      return line;
    },
  };
}
