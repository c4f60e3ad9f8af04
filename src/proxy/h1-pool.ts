import type { OnReadOpts, Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { Call, Connection, UpstreamClosedError } from './h1-connection.ts';
import { requestHead } from './h1-request-head.ts';
import { UpstreamProtocolError } from './h1-response-parser.ts';
import { SocketReads } from './socket-reads.ts';

/*
 * HTTP/1.1 keep-alive connections to one upstream, for the data path only:
 * one request per connection at a time, the request streamed with
 * backpressure, the response handed to an undici-style handler (the stages of
 * src/proxy/forward.ts are written against undici's DispatchHandler, so
 * HTTP/2 upstreams keep undici). Why not undici's Pool here: per call it costs
 * a plaintext hop more CPU than all of meshgate's own code (bench/README.md,
 * "Cost per pod"); what it does beyond this (pipelining, redirects, retries,
 * upgrade, fetch) the sidecar does not use on this path.
 */

/** Makes a socket with `onread` (its reads go to the connection that takes it: ./socket-reads.ts) and hands it over once connected. */
export type Connect = (onread: OnReadOpts, done: (err: Error | null, socket: Socket | null) => void) => void;

export interface H1PoolOptions {
  readonly connect: Connect;
  readonly maxConnections: number;
  /** Idle connections are closed after this, or sooner when the upstream's `Keep-Alive: timeout` says so. */
  readonly keepAliveTimeoutMs: number;
  /** A response head larger than this is refused (502 upstream.protocol_error); node:http's default is 16 KiB. */
  readonly maxHeadBytes: number;
  /** What every connection reads into, in turn (./socket-reads.ts): the sidecar's one read buffer. */
  readonly readBuffer: Buffer;
}

/** What the data path asks of a connection pool: undici's dispatch, close and destroy. */
export type UpstreamDispatcher = Pick<Dispatcher, 'dispatch' | 'close' | 'destroy'>;

/** The context undici hands onRequestStart; the pool has none to give. Shared: nothing per call. */
const NO_CONTEXT: object = Object.freeze({});

/** How often idle connections are looked at for their keep-alive time (at most; sooner for a shorter keep-alive). */
const SWEEP_MS = 1_000;

export function createH1Pool(options: H1PoolOptions): UpstreamDispatcher {
  const idle: Connection[] = [];
  const queue: Call[] = [];
  const open = new Set<Connection>();
  let connecting = 0;
  let closed = false;
  let destroyed = false;
  let drained: (() => void) | undefined;
  const whenDrained = (): Promise<void> => {
    if (open.size === 0 && connecting === 0 && queue.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const before = drained;
      drained = () => {
        before?.();
        resolve();
      };
    });
  };
  const checkDrained = (): void => {
    if (closed && drained && open.size === 0 && connecting === 0 && queue.length === 0) {
      const done = drained;
      drained = undefined;
      done();
    }
  };

  // Idle connections past their keep-alive time are closed by one sweep per pool, running while any is
  // idle, and never taken (start): a socket timeout per connection would be stopped and re-armed on every
  // call, two timer-list updates per request (~2% of a one-hop sidecar's CPU in a perf profile).
  let sweeper: NodeJS.Timeout | undefined;
  const sweepMs = Math.min(SWEEP_MS, Math.max(1, options.keepAliveTimeoutMs));
  const sweep = (): void => {
    const now = performance.now();
    for (const conn of idle.filter((c) => c.expired(now))) conn.destroy(undefined);
    if (idle.length === 0 && sweeper !== undefined) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  };
  const release = (conn: Connection): void => {
    const next = queue.shift();
    if (next) return conn.send(next);
    if (closed) return conn.destroy(undefined);
    idle.push(conn);
    if (conn.idleSince(performance.now(), options.keepAliveTimeoutMs)) sweeper ??= setInterval(sweep, sweepMs).unref();
  };
  /** The most recently used idle connection still within its keep-alive time; expired ones on the way close. */
  const takeIdle = (): Connection | undefined => {
    let conn = idle.pop();
    if (conn === undefined) return undefined;
    const now = performance.now();
    while (conn?.expired(now)) {
      conn.destroy(undefined);
      conn = idle.pop();
    }
    return conn;
  };
  /** A connection slot is free: it goes to the next queued call. */
  const slotFreed = (): void => {
    const next = queue.shift();
    if (next) start(next);
    checkDrained();
  };
  const forget = (conn: Connection): void => {
    open.delete(conn);
    const at = idle.indexOf(conn);
    if (at >= 0) idle.splice(at, 1);
    slotFreed();
  };
  const unqueue = (call: Call): void => {
    const at = queue.indexOf(call);
    if (at >= 0) queue.splice(at, 1);
  };
  const start = (call: Call): void => {
    if (call.aborted) return;
    const conn = takeIdle();
    if (conn) return conn.send(call);
    if (open.size + connecting >= options.maxConnections) {
      queue.push(call);
      return;
    }
    connecting++;
    let answered = false;
    const reads = new SocketReads(options.readBuffer);
    options.connect(reads.onread, (err, socket) => {
      if (answered) return; // a connector that reports twice (a late socket error) must not settle the call again
      answered = true;
      connecting--;
      if (err || !socket || destroyed || reads.spokeFirst) {
        socket?.destroy();
        call.fail(
          destroyed
            ? new UpstreamClosedError('pool destroyed', 'UND_ERR_DESTROYED')
            : reads.spokeFirst
              ? new UpstreamProtocolError('the upstream sent bytes before it was asked anything')
              : (err ?? new UpstreamClosedError('connect failed')),
        );
        slotFreed();
        return;
      }
      // Also after close(): the call was taken before it; its connection closes when the call is done.
      const fresh = new Connection(socket, reads, options.maxHeadBytes, release, forget);
      open.add(fresh);
      fresh.send(call);
    });
  };

  return {
    dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
      if (closed) throw new UpstreamClosedError('pool closed', 'UND_ERR_CLOSED');
      // Built before anything is sent, so a field that cannot be written refuses the call at once (a throw: 400).
      const request = requestHead(opts.method, opts.path, opts.headers as Record<string, string | string[] | number | undefined> | null, opts.body as Readable | null | undefined);
      const call = new Call(opts, request, handler, unqueue);
      handler.onRequestStart?.(call, NO_CONTEXT);
      if (!call.aborted) start(call);
      return true;
    },
    /** Calls in flight and queued finish, then their connections close; idle ones close now. */
    close(): Promise<void> {
      closed = true;
      for (const conn of idle.splice(0)) conn.destroy(undefined);
      sweep();
      return whenDrained();
    },
    /** Every call still in flight or queued fails, every connection closes. */
    destroy(): Promise<void> {
      closed = true;
      destroyed = true;
      for (const call of queue.splice(0)) call.fail(new UpstreamClosedError('pool destroyed', 'UND_ERR_DESTROYED'));
      for (const conn of [...open]) conn.destroy(new UpstreamClosedError('pool destroyed', 'UND_ERR_DESTROYED'));
      sweep();
      return whenDrained();
    },
  } as UpstreamDispatcher;
}
