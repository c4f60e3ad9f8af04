import type { Counter, CounterConfiguration, LabelValues } from 'prom-client';
import { getOrAdd } from './call-metrics.ts';
import { Counter as PromCounter } from './prom-client.ts';

/**
 * A prom-client Counter for what the data path counts on every call (a
 * filter's decision): inc() adds to a plain number found through one Map per
 * label, and the sums reach prom-client when something reads the counter (its
 * collect(), which prom-client runs before every scrape, worker report and
 * get()). Everything else is prom-client's own.
 *
 * Why: prom-client's inc() validates the labels, builds a string key from
 * them and looks it up on every call, ~2-3 µs per call in a sidecar under
 * load (the authz decision counter of the bench:mesh orders sidecar,
 * --cpu-prof), where these lookups hash label strings that are the same
 * objects call after call. call-metrics.ts does the same for the two metrics
 * every call records, with positional labels and no label object. Label names
 * are checked once per label set, when its first count arrives.
 */
export function createPerCallCounter<T extends string>(config: CounterConfiguration<T>): Counter<T> {
  const labelNames = (config.labelNames ?? []) as readonly T[];
  const known = new Set<string>(labelNames);
  const root = new Map<unknown, unknown>();
  const slots: Slot<T>[] = [];
  const counter: Counter<T> = new PromCounter<T>({
    ...config,
    collect() {
      flush();
      return config.collect?.call(this);
    },
  });
  const promInc = counter.inc.bind(counter) as (labels?: LabelValues<T> | number, value?: number) => void;
  const promReset = counter.reset.bind(counter);
  const promRemove = counter.remove.bind(counter);

  function flush(): void {
    for (const slot of slots) {
      if (slot.pending === 0) continue;
      const pending = slot.pending;
      slot.pending = 0;
      promInc(slot.labels, pending);
    }
  }

  function slotOf(labels: LabelValues<T>): Slot<T> {
    let level = root;
    for (let i = 0; i < labelNames.length - 1; i++) level = getOrAdd(level as Map<unknown, Map<unknown, unknown>>, labels[labelNames[i]!]);
    const last = labelNames.length > 0 ? labels[labelNames[labelNames.length - 1]!] : undefined;
    let slot = level.get(last) as Slot<T> | undefined;
    if (slot === undefined) {
      // prom-client's own check and message, once per label set instead of per call.
      for (const name of Object.keys(labels)) {
        if (!known.has(name)) throw new Error(`Added label "${name}" is not included in initial labelset: ${JSON.stringify(labelNames)}`);
      }
      slot = { labels: { ...labels }, pending: 0 };
      level.set(last, slot);
      slots.push(slot);
    }
    return slot;
  }

  counter.inc = ((labels?: LabelValues<T> | number, value?: number): void => {
    // No labels, or a value prom-client refuses (its error is the caller's): prom-client's own path.
    if (labels === undefined || typeof labels !== 'object' || (value !== undefined && !(Number.isFinite(value) && value >= 0))) {
      promInc(labels, value);
      return;
    }
    slotOf(labels).pending += value ?? 1;
  }) as Counter<T>['inc'];
  counter.reset = (): void => {
    for (const slot of slots) slot.pending = 0;
    promReset();
  };
  counter.remove = ((...args: Parameters<Counter<T>['remove']>): void => {
    flush();
    promRemove(...args);
  }) as Counter<T>['remove'];
  return counter;
}

interface Slot<T extends string> {
  readonly labels: LabelValues<T>;
  pending: number;
}
