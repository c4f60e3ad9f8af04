import type { Worker } from 'node:cluster';
import cluster from 'node:cluster';
import { ConfigError } from '../../config/load.ts';
import type { Clock } from '../../core/clock.ts';
import type { Logger } from '../../telemetry/logger.ts';
import type { FailureReport, ListeningPorts, Question, ToWorker, WorkerInit } from './protocol.ts';
import { isFromWorker, WORKER_ENV } from './protocol.ts';

/** Restarts of one slot: backoff doubling from baseMs to maxMs; a worker up for stableMs starts the count again. */
interface RestartPolicy {
  readonly baseMs: number;
  readonly maxMs: number;
  readonly stableMs: number;
  /** Failures in a row after which the pool gives up (`fatal`): a slot that cannot stay up is a broken pod. */
  readonly maxInRow: number;
}

const DEFAULT_RESTART: RestartPolicy = { baseMs: 100, maxMs: 10_000, stableMs: 30_000, maxInRow: 10 };

type SlotState = 'starting' | 'ready' | 'restarting' | 'stopped' | 'failed';

/** One slot as /config_dump shows it. */
interface SlotView {
  readonly worker: number;
  readonly pid: number | undefined;
  readonly state: SlotState;
  readonly restarts: number;
  readonly lastExit: { readonly code: number | null; readonly signal: string | null; readonly error: string | undefined } | undefined;
}

/** A worker's answer to a question, or why there is none (pid undefined: the slot has no worker that could answer yet). */
export type Answer =
  | { readonly worker: number; readonly pid: number; readonly ok: true; readonly value: unknown }
  | { readonly worker: number; readonly pid: number | undefined; readonly ok: false; readonly error: string };

export interface WorkerPoolOptions {
  readonly size: number;
  readonly logger: Logger;
  readonly clock: Clock;
  /** The init of a worker, built when it says hello: the newest certificate and policy. */
  init(slot: number): WorkerInit;
  /** The first worker bound its ports (the OS's choice for port 0): the others get them in their init. */
  bound(ports: ListeningPorts): void;
  /** A worker process ended (its pid): metrics keep its counters. */
  exited?(pid: number): void;
  restarted?(slot: number): void;
  readonly restart?: RestartPolicy;
}

export interface WorkerPool {
  /**
   * Forks the workers; with `portsKnown` false (a port 0 in the config), the first alone, then the others
   * once its ports are known. Rejects with the first start-up failure.
   */
  start(portsKnown: boolean): Promise<ListeningPorts>;
  /** To every worker that has its init (a later one gets the newest state in its init). */
  broadcast(message: ToWorker): void;
  /** Asks every slot; a slot without a live worker, or one that does not answer in `timeoutMs`, answers ok: false. */
  ask(question: Question, timeoutMs: number): Promise<Answer[]>;
  slots(): SlotView[];
  /** Asks every worker to drain, waits for them to exit (killed past `timeoutMs` and a grace); true when all completed. */
  drain(timeoutMs: number): Promise<boolean>;
  /** Resolves when a slot failed maxInRow times in a row. */
  readonly fatal: Promise<Error>;
}

interface Slot {
  readonly n: number;
  worker: Worker | undefined;
  state: SlotState;
  /** Received its init: broadcasts reach it from then on. */
  initialized: boolean;
  restarts: number;
  inRow: number;
  startedAt: number;
  failure: FailureReport | undefined;
  lastExit: SlotView['lastExit'];
  drained: boolean;
  timer: NodeJS.Timeout | undefined;
  /** Settles the slot's start: listening, or the reason it failed. */
  settle: ((result: ListeningPorts | Error) => void) | undefined;
}

/**
 * The primary's worker processes (node:cluster): one per slot, restarted
 * when one dies, each handed the primary's newest certificate and policy.
 * Workers bind their own sockets (SO_REUSEPORT), so no connection passes
 * through the primary.
 */
export function createWorkerPool(opts: WorkerPoolOptions): WorkerPool {
  const { logger, clock } = opts;
  const restart = opts.restart ?? DEFAULT_RESTART;
  // Structured clone: Dates (certificate facts) and snapshot documents arrive as sent.
  cluster.setupPrimary({ serialization: 'advanced' });
  const slots: Slot[] = Array.from({ length: opts.size }, (_, i) => ({
    n: i + 1,
    worker: undefined,
    state: 'starting',
    initialized: false,
    restarts: 0,
    inRow: 0,
    startedAt: 0,
    failure: undefined,
    lastExit: undefined,
    drained: false,
    timer: undefined,
    settle: undefined,
  }));
  const pending = new Map<number, { pid: number; settle: (a: Answer) => void }>();
  let nextId = 0;
  let started = false;
  let stopping = false;
  let fail: (err: Error) => void = () => {};
  const fatal = new Promise<Error>((resolve) => (fail = resolve));
  const exits = new Set<() => void>();

  const send = (worker: Worker, message: ToWorker): void => {
    // A callback: a worker that just died is an error here, not an 'error' event.
    if (worker.isConnected()) worker.send(message, undefined, () => {});
  };

  const fork = (slot: Slot): Promise<ListeningPorts> => {
    const worker = cluster.fork({ [WORKER_ENV]: String(slot.n) });
    Object.assign(slot, { worker, state: 'starting', initialized: false, startedAt: clock.monotonic(), failure: undefined, drained: false });
    const listening = new Promise<ListeningPorts>((resolve, reject) => {
      slot.settle = (result) => {
        slot.settle = undefined;
        if (result instanceof Error) reject(result);
        else resolve(result);
      };
    });
    worker.on('message', (message: unknown) => {
      if (!isFromWorker(message) || slot.worker !== worker) return;
      switch (message.type) {
        case 'meshgate:hello':
          send(worker, { type: 'meshgate:init', init: opts.init(slot.n) });
          slot.initialized = true;
          return;
        case 'meshgate:listening':
          slot.state = 'ready';
          slot.settle?.(message.ports);
          return;
        case 'meshgate:failed':
          slot.failure = message.error;
          return;
        case 'meshgate:answer': {
          const waiting = pending.get(message.id);
          pending.delete(message.id);
          waiting?.settle(message.ok ? { worker: slot.n, pid: waiting.pid, ok: true, value: message.value } : { worker: slot.n, pid: waiting.pid, ok: false, error: message.error });
          return;
        }
        case 'meshgate:drained':
          slot.drained = message.completed;
          return;
      }
    });
    worker.on('error', (err) => logger.warn({ worker: slot.n, err: err.message }, 'worker channel error'));
    worker.on('exit', (code, signal) => exited(slot, worker, code, signal));
    return listening;
  };

  const exited = (slot: Slot, worker: Worker, code: number | null, signal: string | null): void => {
    if (slot.worker !== worker) return;
    const pid = worker.process.pid ?? 0;
    slot.worker = undefined;
    slot.initialized = false;
    slot.lastExit = { code, signal, error: slot.failure?.message };
    for (const [id, waiting] of pending) {
      if (waiting.pid !== pid) continue;
      pending.delete(id);
      waiting.settle({ worker: slot.n, pid, ok: false, error: 'exited' });
    }
    opts.exited?.(pid);
    for (const wake of exits) wake();
    if (stopping) {
      slot.state = 'stopped';
      return;
    }
    // A worker of the first start that never listened fails the start (no restart: the sidecar does not come up);
    // one that listened and died while its siblings were still starting is restarted like any other.
    const failedStart = !started && slot.settle !== undefined;
    slot.settle?.(startFailure(slot, code, signal));
    if (failedStart) {
      slot.state = 'failed';
      return;
    }
    if (clock.monotonic() - slot.startedAt >= restart.stableMs) slot.inRow = 0;
    slot.inRow++;
    const fields = { worker: slot.n, pid, code, signal, error: slot.failure?.message, failuresInRow: slot.inRow };
    if (slot.inRow > restart.maxInRow) {
      slot.state = 'failed';
      logger.error(fields, 'worker keeps failing; giving up: the sidecar stops');
      fail(new Error(`worker ${slot.n} failed ${slot.inRow} times in a row (last: ${describeExit(code, signal, slot.failure)})`));
      return;
    }
    const delayMs = Math.min(restart.maxMs, restart.baseMs * 2 ** (slot.inRow - 1));
    slot.state = 'restarting';
    logger.error({ ...fields, restartInMs: delayMs }, 'worker exited; restarting it');
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (stopping) return;
      slot.restarts++;
      opts.restarted?.(slot.n);
      fork(slot).then(
        () => logger.info({ worker: slot.n, pid: slot.worker?.process.pid, restarts: slot.restarts }, 'worker restarted'),
        () => {}, // its exit is handled above
      );
    }, delayMs);
  };

  const askOne = (slot: Slot, question: Question, timeoutMs: number): Promise<Answer> => {
    const worker = slot.worker;
    const pid = worker?.process.pid;
    if (!worker || pid === undefined || !slot.initialized || !worker.isConnected()) return Promise.resolve({ worker: slot.n, pid: undefined, ok: false, error: slot.state });
    const id = nextId++;
    return new Promise<Answer>((resolve) => {
      const timer = setTimeout(() => {
        pending.delete(id);
        resolve({ worker: slot.n, pid, ok: false, error: `no answer within ${timeoutMs} ms` });
      }, timeoutMs);
      pending.set(id, {
        pid,
        settle: (answer) => {
          clearTimeout(timer);
          resolve(answer);
        },
      });
      send(worker, { type: 'meshgate:ask', id, question });
    });
  };

  return {
    async start(portsKnown) {
      const [first, ...rest] = slots;
      const starting = fork(first!);
      const others = portsKnown ? rest.map(fork) : [];
      const ports = await starting;
      opts.bound(ports);
      if (!portsKnown) others.push(...rest.map(fork));
      await Promise.all(others);
      started = true;
      return ports;
    },
    broadcast(message) {
      for (const slot of slots) if (slot.worker && slot.initialized) send(slot.worker, message);
    },
    ask: (question, timeoutMs) => Promise.all(slots.map((slot) => askOne(slot, question, timeoutMs))),
    slots: () => slots.map((s) => ({ worker: s.n, pid: s.worker?.process.pid, state: s.state, restarts: s.restarts, lastExit: s.lastExit })),
    async drain(timeoutMs) {
      stopping = true;
      for (const slot of slots) clearTimeout(slot.timer);
      const live = slots.filter((s) => s.worker);
      for (const slot of live) send(slot.worker!, { type: 'meshgate:drain', timeoutMs });
      const allGone = (): boolean => slots.every((s) => !s.worker);
      // A worker that has not drained by then (stuck, or still waiting for its init) is killed.
      const killer = setTimeout(() => {
        for (const slot of slots) slot.worker?.process.kill('SIGKILL');
      }, timeoutMs + 2_000);
      await new Promise<void>((resolve) => {
        const check = (): void => {
          if (!allGone()) return;
          exits.delete(check);
          resolve();
        };
        exits.add(check);
        check();
      });
      clearTimeout(killer);
      return live.every((s) => s.drained);
    },
    fatal,
  };
}

function describeExit(code: number | null, signal: string | null, failure: FailureReport | undefined): string {
  const how = signal ? `killed by ${signal}` : `exit code ${code}`;
  return failure ? `${how}: ${failure.message}` : how;
}

/** Why a worker that exited before listening did not start: its own report when it sent one. */
function startFailure(slot: Slot, code: number | null, signal: string | null): Error {
  const failure = slot.failure;
  if (!failure) return new Error(`sidecar worker ${slot.n} exited before listening (${describeExit(code, signal, undefined)})`);
  // The CLI prints a ConfigError as its lines (exit code 2), as it would for a single process.
  if (failure.name === 'ConfigError') return new ConfigError(failure.message, failure.message.split('\n'));
  return Object.assign(new Error(failure.message), { name: failure.name, code: failure.code, address: failure.address, port: failure.port });
}
