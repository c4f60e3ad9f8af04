import type { CallContext } from '../../core/call-context.ts';
import type { Clock } from '../../core/clock.ts';
import type { ReasonCode } from '../../core/reason-codes.ts';
import { reasonCode } from '../../core/reason-codes.ts';
import type { ClientAddressResult } from '../../proxy/client-address.ts';

/*
 * The auto-ban list: a bounded, temporary deny list fed by the denials of
 * every filter. It is created once by the sidecar and outlives every filter
 * chain (a chain is rebuilt on each policy snapshot; bans and counters must
 * not reset with it). The ip-access filter of the snapshot in force installs
 * its settings and its client-address resolver with configure().
 *
 * Invariants:
 * - `bans` holds at most `settings.maxEntries` entries and `counters` at most
 *   `settings.maxEntries` addresses; both are empty while auto-ban is off.
 * - Every live ban has a node in `heap` (ordered by expiry); a heap node whose
 *   ban was lifted, expired or replaced is stale and skipped when it surfaces.
 * - Times are the clock's monotonic milliseconds; wall time only for display.
 */

export interface AutoBanSettings {
  /** Denials from one address, within `window`, that trigger a ban. */
  readonly threshold: number;
  readonly window: number;
  readonly duration: number;
  readonly maxEntries: number;
}

/** A ban as the admin API shows it. */
export interface BanView {
  readonly address: string;
  /** When the ban ends (ISO 8601). */
  readonly until: string;
  /** Reason code of the denial that tripped the ban (e.g. `authz.denied`). */
  readonly reason: string;
  /** Denials counted in the window when the ban was placed. */
  readonly count: number;
}

/** A live ban, as the filter sees it. */
interface BanHit {
  /** Milliseconds until the ban ends (> 0). */
  readonly remainingMs: number;
}

export interface BanListEvents {
  banned?(ban: BanView): void;
  /** A ban (list `bans`) or a denial counter (list `counters`) dropped early because its list was full. */
  evicted?(list: 'bans' | 'counters', address: string): void;
  /** Lifted by an operator through the admin API. */
  lifted?(ban: BanView): void;
  /** Auto-ban was turned off by a snapshot: every ban and counter dropped. */
  disabled?(bansDropped: number): void;
}

export interface BanList {
  /**
   * Settings of the snapshot in force and how that snapshot finds a call's
   * client address; undefined turns auto-ban off and drops every ban and counter.
   */
  configure(next: { readonly settings: AutoBanSettings; readonly clientAddress: (call: CallContext) => ClientAddressResult } | undefined): void;
  readonly enabled: boolean;
  /** The live ban of `address` (canonical form, see client-address.ts), if any. Expired ones are dropped here. */
  check(address: string): BanHit | undefined;
  /**
   * Counts one refused call against its client address, and bans the address
   * when it reaches the threshold. The inbound stack calls this for every
   * `respond` verdict of the chain. Only the caller's fault counts: 4xx codes
   * other than ip.denied (an address the lists refuse gains nothing from a
   * ban) and ip.banned (a ban is not extended by knocking on it).
   */
  recordDenial(call: CallContext, code: ReasonCode<'data'>): void;
  /** Live bans, soonest expiry first. */
  list(): BanView[];
  /** Lifts the ban of `address` (canonical form); the removed ban, or undefined when there was none. */
  remove(address: string): BanView | undefined;
  /** Live bans. */
  size(): number;
}

interface Ban {
  readonly address: string;
  readonly until: number;
  readonly reason: string;
  readonly count: number;
}

/**
 * Denials of one address: the current and previous window's counts, weighted
 * as a sliding window (the previous one counts for the part still inside the
 * window). A window opens at the first denial, so a burst within `window` of
 * it counts exactly.
 */
interface Counter {
  start: number;
  current: number;
  previous: number;
}

/**
 * Codes that never count toward a ban. `request.cancelled`: the validate
 * filter answers it when the caller itself went away while its body was read.
 */
const NOT_COUNTED = new Set(['ip.denied', 'ip.banned', 'request.cancelled']);

export function createBanList(deps: { clock: Clock; events?: BanListEvents }): BanList {
  const { clock } = deps;
  const events = deps.events ?? {};
  let settings: AutoBanSettings | undefined;
  let clientAddress: ((call: CallContext) => ClientAddressResult) | undefined;
  const bans = new Map<string, Ban>();
  const counters = new Map<string, Counter>();
  const heap: Ban[] = [];

  const push = (ban: Ban): void => {
    heap.push(ban);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.until <= heap[i]!.until) break;
      [heap[parent], heap[i]] = [heap[i]!, heap[parent]!];
      i = parent;
    }
  };
  const pop = (): Ban | undefined => {
    const top = heap[0];
    const last = heap.pop();
    if (heap.length === 0 || last === undefined) return top;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let least = i;
      if (l < heap.length && heap[l]!.until < heap[least]!.until) least = l;
      if (r < heap.length && heap[r]!.until < heap[least]!.until) least = r;
      if (least === i) break;
      [heap[least], heap[i]] = [heap[i]!, heap[least]!];
      i = least;
    }
    return top;
  };
  /** Drops stale heap nodes from the top; the live ban expiring soonest, if any, stays there. */
  const settleTop = (): Ban | undefined => {
    while (heap.length > 0 && bans.get(heap[0]!.address) !== heap[0]) pop();
    return heap[0];
  };
  const purgeExpired = (now: number): void => {
    for (let top = settleTop(); top && top.until <= now; top = settleTop()) {
      bans.delete(top.address);
      pop();
    }
    // Lifted bans leave stale nodes behind; rebuild before they outnumber the live ones.
    if (heap.length > 2 * bans.size + 64) {
      heap.length = 0;
      for (const ban of bans.values()) push(ban);
    }
  };
  const evictSoonest = (): void => {
    const top = settleTop();
    if (!top) return;
    pop();
    bans.delete(top.address);
    events.evicted?.('bans', top.address);
  };
  const view = (ban: Ban, now: number): BanView => ({
    address: ban.address,
    until: new Date(clock.now() + (ban.until - now)).toISOString(),
    reason: ban.reason,
    count: ban.count,
  });

  return {
    configure(next) {
      if (!next) {
        const wasOn = settings !== undefined;
        settings = undefined;
        clientAddress = undefined;
        purgeExpired(clock.monotonic());
        const dropped = bans.size;
        bans.clear();
        counters.clear();
        heap.length = 0;
        if (wasOn) events.disabled?.(dropped);
        return;
      }
      settings = next.settings;
      clientAddress = next.clientAddress;
      purgeExpired(clock.monotonic());
      while (bans.size > settings.maxEntries) evictSoonest();
      for (const address of counters.keys()) {
        if (counters.size <= settings.maxEntries) break;
        counters.delete(address);
        events.evicted?.('counters', address);
      }
    },
    get enabled() {
      return settings !== undefined;
    },
    check(address) {
      const ban = bans.get(address);
      if (!ban) return undefined;
      const remainingMs = ban.until - clock.monotonic();
      if (remainingMs > 0) return { remainingMs };
      bans.delete(address);
      return undefined;
    },
    recordDenial(call, code) {
      if (!settings || !clientAddress || NOT_COUNTED.has(code)) return;
      const http = reasonCode(code).http;
      if (http < 400 || http >= 500) return; // the sidecar's own trouble (5xx) is never the caller's fault
      const client = clientAddress(call);
      if (!client) return;
      const address = client.address;
      const now = clock.monotonic();
      if (bans.has(address) && bans.get(address)!.until > now) return;
      const { threshold, window, duration, maxEntries } = settings;
      let counter = counters.get(address);
      if (counter) {
        // Re-inserted so the map's order is least recently denied first: the order counters are evicted in.
        counters.delete(address);
        if (now - counter.start >= 2 * window) counter = { start: now, current: 0, previous: 0 };
        else if (now - counter.start >= window) counter = { start: counter.start + window, current: 0, previous: counter.current };
      } else {
        counter = { start: now, current: 0, previous: 0 };
        if (counters.size >= maxEntries) {
          const oldest = counters.keys().next().value!;
          counters.delete(oldest);
          events.evicted?.('counters', oldest);
        }
      }
      counter.current++;
      const weighted = counter.previous * Math.max(0, 1 - (now - counter.start) / window) + counter.current;
      if (weighted < threshold) {
        counters.set(address, counter);
        return;
      }
      purgeExpired(now);
      if (bans.size >= maxEntries) evictSoonest();
      const ban: Ban = { address, until: now + duration, reason: code, count: Math.round(weighted) };
      bans.set(address, ban);
      push(ban);
      events.banned?.(view(ban, now));
    },
    list() {
      const now = clock.monotonic();
      purgeExpired(now);
      return [...bans.values()].sort((a, b) => a.until - b.until || (a.address < b.address ? -1 : 1)).map((ban) => view(ban, now));
    },
    remove(address) {
      const ban = bans.get(address);
      if (!ban) return undefined;
      bans.delete(address);
      const now = clock.monotonic();
      if (ban.until <= now) return undefined;
      counters.delete(address);
      const removed = view(ban, now);
      events.lifted?.(removed);
      return removed;
    },
    size() {
      purgeExpired(clock.monotonic());
      return bans.size;
    },
  };
}
