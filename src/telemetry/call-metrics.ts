import type { Counter, Registry } from 'prom-client';
import type { Direction } from '../core/call-context.ts';

/**
 * The two metrics every call records, counted on the data path into plain
 * numbers and handed to prom-client only when something reads them (a
 * scrape, a worker's report, a test's get()).
 *
 * Why not prom-client's inc() and observe() per call: each validates its
 * labels, builds a string key from them and looks it up, and the histogram
 * turns the bucket bound (a double) into a property name twice: ~5% of a
 * one-hop sidecar's user CPU in a perf profile (2026-12-06; bench/README.md,
 * "Cost per pod", has the paired figures). Here a call is a few Map
 * lookups on strings the call already holds and an array increment.
 */
export interface CallMetrics {
  /** One call ended: meshgate_requests_total and meshgate_request_duration_seconds. */
  record(direction: Direction, principal: string, destination: string, status: number, reason: string, seconds: number): void;
  /** A request refused before it became a call (no duration): meshgate_requests_total only. */
  count(direction: Direction, principal: string, destination: string, status: number, reason: string): void;
}

type RequestLabels = 'direction' | 'source_principal' | 'destination_service' | 'response_code' | 'reason';

interface PendingCount {
  readonly labels: Record<RequestLabels, string>;
  pending: number;
}

/**
 * Counts for meshgate_requests_total, flushed into its prom-client Counter
 * from the counter's collect(), which prom-client runs before every read.
 * Keyed level by level (direction, principal, destination, status, reason):
 * the label strings are the same objects call after call, so V8 hashes each
 * once, and no key string is built per call.
 */
export class RequestCounts {
  readonly #byDirection = new Map<string, Map<string, Map<string, Map<number, Map<string, PendingCount>>>>>();

  add(direction: string, principal: string, destination: string, status: number, reason: string): void {
    const byPrincipal = getOrAdd(this.#byDirection, direction);
    const byDestination = getOrAdd(byPrincipal, principal);
    const byStatus = getOrAdd(byDestination, destination);
    const byReason = getOrAdd(byStatus, status);
    let slot = byReason.get(reason);
    if (slot === undefined) {
      slot = { labels: { direction, source_principal: principal, destination_service: destination, response_code: String(status), reason }, pending: 0 };
      byReason.set(reason, slot);
    }
    slot.pending++;
  }

  /** Moves what was counted since the last flush into the counter. */
  flushInto(counter: Counter<RequestLabels>): void {
    for (const byPrincipal of this.#byDirection.values())
      for (const byDestination of byPrincipal.values())
        for (const byStatus of byDestination.values())
          for (const byReason of byStatus.values())
            for (const slot of byReason.values()) {
              if (slot.pending === 0) continue;
              counter.inc(slot.labels, slot.pending);
              slot.pending = 0;
            }
  }
}

/** The map under `key`, made empty on first use: one level of a table keyed label by label. */
export function getOrAdd<K, V extends Map<unknown, unknown>>(map: Map<K, V>, key: K): V {
  let inner = map.get(key);
  if (inner === undefined) {
    inner = new Map() as V;
    map.set(key, inner);
  }
  return inner;
}

type DurationLabels = 'direction' | 'destination_service';

interface Series {
  readonly labels: Record<DurationLabels, string>;
  /** Observations per bucket, not cumulative; the last one is above every bound (+Inf). */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

/** One value of prom-client's metric JSON (what Registry#getMetricsAsJSON and AggregatorRegistry read). */
interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName: string;
}

/**
 * meshgate_request_duration_seconds: a histogram with prom-client's shape
 * (name, help, type, aggregator, get(), reset()), registered in its Registry,
 * which reads only those. prom-client's Histogram has no way to add
 * observations other than one observe() each, hence this small one.
 */
export class DurationHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly labelNames: readonly DurationLabels[] = ['direction', 'destination_service'];
  readonly name: string;
  readonly help: string;
  readonly #bounds: Float64Array;
  readonly #byDirection = new Map<string, Map<string, Series>>();

  constructor(name: string, help: string, bounds: readonly number[]) {
    this.name = name;
    this.help = help;
    this.#bounds = Float64Array.from([...bounds].sort((a, b) => a - b));
  }

  observe(direction: string, destination: string, seconds: number): void {
    if (!Number.isFinite(seconds)) return;
    const byDestination = getOrAdd(this.#byDirection, direction);
    let series = byDestination.get(destination);
    if (series === undefined) {
      series = { labels: { direction, destination_service: destination }, counts: new Float64Array(this.#bounds.length + 1), sum: 0, count: 0 };
      byDestination.set(destination, series);
    }
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    series.counts[i]!++;
    series.sum += seconds;
    series.count++;
  }

  /** prom-client's metric JSON: per series, cumulative buckets (le), +Inf, _sum and _count. */
  async get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: MetricValue[] }> {
    const values: MetricValue[] = [];
    const bucketName = `${this.name}_bucket`;
    for (const byDestination of this.#byDirection.values()) {
      for (const s of byDestination.values()) {
        let cumulative = 0;
        for (let i = 0; i < this.#bounds.length; i++) {
          cumulative += s.counts[i]!;
          values.push({ value: cumulative, labels: { le: this.#bounds[i]!, ...s.labels }, metricName: bucketName });
        }
        values.push({ value: s.count, labels: { le: '+Inf', ...s.labels }, metricName: bucketName });
        values.push({ value: s.sum, labels: { ...s.labels }, metricName: `${this.name}_sum` });
        values.push({ value: s.count, labels: { ...s.labels }, metricName: `${this.name}_count` });
      }
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.#byDirection.clear();
  }

  /** Into a prom-client Registry, which takes any object with a name and get() (its types list only its own classes). */
  registerIn(registry: Registry): void {
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }
}
