import type { QueueOwner, WaitBudget } from './throttle-queues.ts';

/*
 * The slots of concurrency rules: at most `max` calls of one key in flight,
 * then a bounded FIFO queue with a deadline per waiter, then a refusal. A
 * slot is held from admission to the end of the call (the inbound stack calls
 * the release hook once, whatever ended it) and handed straight to the next
 * waiter when released, so a newcomer cannot take it from under the queue.
 *
 * An entry exists only while a call of its key is in flight or waiting, so
 * the table is bounded by the calls the listeners hold; queues also count
 * against the sidecar's budget of waiting calls (throttle-queues.ts).
 * Entries are keyed by rule id and key value, not by the limits: a new
 * snapshot that changes `max` keeps counting the calls already in flight.
 */

export interface ConcurrencyLimits {
  readonly max: number;
  readonly queue: number;
  readonly maxWaitMs: number;
}

/** Gives the slot back; safe to call more than once (only the first counts). */
type Release = () => void;

type ConcurrencyAnswer =
  | { readonly kind: 'admitted'; readonly release: Release }
  /** `admitted` settles with a slot, 'timeout' after maxWait, or 'gone' once `leave` was called. */
  | { readonly kind: 'queued'; readonly admitted: Promise<Release | 'timeout' | 'gone'>; leave(): void }
  | { readonly kind: 'refused' };

interface Waiter {
  gone: boolean;
  timer: NodeJS.Timeout | undefined;
  settle(outcome: Release | 'timeout' | 'gone'): void;
}

interface Entry {
  readonly key: string;
  readonly owner: QueueOwner;
  inFlight: number;
  /** The latest snapshot's max: a lowered one is not exceeded by handing a released slot on. */
  max: number;
  readonly waiters: Waiter[];
  live: number;
}

export interface ConcurrencySlots {
  acquire(key: string, limits: ConcurrencyLimits, owner: QueueOwner): ConcurrencyAnswer;
  /** Shadow rules: always a slot; `over` when the call would have been refused or queued. */
  acquireShadow(key: string, max: number, owner: QueueOwner): { readonly release: Release; readonly over: boolean };
  /** In flight and waiting, per rule, for the gauges. */
  usage(into: Map<string, { owner: QueueOwner; inFlight: number; queued: number }>): void;
  /** Keys with a call in flight or waiting. */
  readonly size: number;
}

export function createConcurrencySlots(budget: WaitBudget): ConcurrencySlots {
  const entries = new Map<string, Entry>();

  const leaveQueue = (entry: Entry, waiter: Waiter): void => {
    waiter.gone = true;
    if (waiter.timer) clearTimeout(waiter.timer);
    entry.live--;
    budget.used--;
    const i = entry.waiters.indexOf(waiter);
    if (i >= 0) entry.waiters.splice(i, 1);
  };

  const releaseOf = (entry: Entry): Release => {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      // The slot goes to the first waiter still there; otherwise it is free.
      const next = entry.inFlight <= entry.max ? entry.waiters[0] : undefined;
      if (next) {
        leaveQueue(entry, next);
        next.settle(releaseOf(entry));
        return;
      }
      entry.inFlight--;
      if (entry.inFlight === 0 && entry.live === 0 && entries.get(entry.key) === entry) entries.delete(entry.key);
    };
  };

  const entryOf = (key: string, owner: QueueOwner, max: number): Entry => {
    let entry = entries.get(key);
    if (!entry) {
      entry = { key, owner, inFlight: 0, max, waiters: [], live: 0 };
      entries.set(key, entry);
    }
    entry.max = max;
    return entry;
  };

  return {
    acquire(key, limits, owner) {
      const entry = entryOf(key, owner, limits.max);
      if (entry.inFlight < limits.max && entry.live === 0) {
        entry.inFlight++;
        return { kind: 'admitted', release: releaseOf(entry) };
      }
      if (entry.live >= limits.queue || budget.used >= budget.max) {
        if (entry.inFlight === 0 && entry.live === 0) entries.delete(key);
        return { kind: 'refused' };
      }
      let settle!: (outcome: Release | 'timeout' | 'gone') => void;
      const admitted = new Promise<Release | 'timeout' | 'gone'>((resolve) => (settle = resolve));
      const waiter: Waiter = { gone: false, timer: undefined, settle };
      entry.waiters.push(waiter);
      entry.live++;
      budget.used++;
      const giveUp = (outcome: 'timeout' | 'gone'): void => {
        if (waiter.gone) return;
        leaveQueue(entry, waiter);
        if (entry.inFlight === 0 && entry.live === 0 && entries.get(key) === entry) entries.delete(key);
        settle(outcome);
      };
      waiter.timer = setTimeout(giveUp, limits.maxWaitMs, 'timeout');
      return { kind: 'queued', admitted, leave: () => giveUp('gone') };
    },
    acquireShadow(key, max, owner) {
      const entry = entryOf(key, owner, max);
      const over = entry.inFlight >= max;
      entry.inFlight++;
      return { release: releaseOf(entry), over };
    },
    usage(into) {
      for (const entry of entries.values()) {
        const id = `${entry.owner.policy}#${entry.owner.rule}`;
        const sum = into.get(id);
        if (sum) {
          sum.inFlight += entry.inFlight;
          sum.queued += entry.live;
        } else {
          into.set(id, { owner: entry.owner, inFlight: entry.inFlight, queued: entry.live });
        }
      }
    },
    get size() {
      return entries.size;
    },
  };
}
