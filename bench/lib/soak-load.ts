import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { Pool } from 'undici';
import type { EchoClient } from './soak-mesh.ts';

/*
 * The soak's calls: a fixed rate, open loop (a slow sidecar does not slow the
 * offered load down), spread over classes that each expect one outcome:
 * allowed -> 200 (gRPC OK), denied path -> 403 authz.denied (gRPC
 * PERMISSION_DENIED), no token -> 401 authn.missing_token, and a rate-limited
 * path -> 200 or 429 ratelimit.exceeded (how many 200s is checked against the
 * limit per window). An error is a call whose outcome is not its class's, any
 * 5xx, or a call that failed or took longer than CALL_TIMEOUT_MS.
 */

const CALL_TIMEOUT_MS = 5000;

interface Outcome {
  /** HTTP status, or `grpc:<code>`. */
  readonly status: string;
  readonly reason: string | undefined;
}

export interface CallClass {
  readonly name: string;
  /** Share of the calls, out of the sum of weights. */
  readonly weight: number;
  /** The outcomes that are not errors. */
  readonly expect: readonly string[];
}

/** `status reason` keys of the expected outcomes. */
export const CLASSES: readonly CallClass[] = [
  { name: 'h1 allowed', weight: 28, expect: ['200'] },
  { name: 'h2 allowed', weight: 24, expect: ['200'] },
  { name: 'grpc allowed', weight: 20, expect: ['grpc:0'] },
  { name: 'h1 denied', weight: 5, expect: ['403 authz.denied'] },
  { name: 'h2 denied', weight: 3, expect: ['403 authz.denied'] },
  { name: 'grpc denied', weight: 3, expect: ['grpc:7'] },
  { name: 'h1 no token', weight: 4, expect: ['401 authn.missing_token'] },
  { name: 'h1 limited', weight: 13, expect: ['200', '429 ratelimit.exceeded'] },
];

export interface CallRecord {
  readonly cls: string;
  /** performance.now() when the call was issued. */
  readonly at: number;
  readonly ms: number;
  readonly outcome: string;
  readonly error: boolean;
}

export interface LoadClients {
  run(cls: CallClass, seq: number): Promise<Outcome>;
  close(): Promise<void>;
}

function outcomeKey(o: Outcome): string {
  return o.reason ? `${o.status} ${o.reason}` : o.status;
}

function isError(cls: CallClass, outcome: Outcome): boolean {
  if (/^5\d\d$/.test(outcome.status)) return true;
  return !cls.expect.includes(outcomeKey(outcome));
}

/** Clients of the frontend's outbound listener: HTTP/1.1 (a keep-alive pool), HTTP/2 (one session), gRPC. */
export function createLoadClients(outboundPort: number, echo: EchoClient, token: () => string): LoadClients {
  const pool = new Pool(`http://127.0.0.1:${outboundPort}`, { connections: 32, pipelining: 1 });
  let session: http2.ClientHttp2Session | undefined;
  const h2 = (): http2.ClientHttp2Session => {
    if (!session || session.closed || session.destroyed) {
      session = http2.connect(`http://127.0.0.1:${outboundPort}`);
      session.on('error', () => {});
    }
    return session;
  };

  const h1Call = async (path: string, withToken: boolean): Promise<Outcome> => {
    const res = await pool.request({
      method: 'GET',
      path,
      headers: { host: 'orders', ...(withToken ? { authorization: `Bearer ${token()}` } : {}) },
      headersTimeout: CALL_TIMEOUT_MS,
      bodyTimeout: CALL_TIMEOUT_MS,
    });
    await res.body.dump();
    return { status: String(res.statusCode), reason: res.headers['x-meshgate-reason'] as string | undefined };
  };

  const h2Call = (path: string): Promise<Outcome> =>
    new Promise((resolve, reject) => {
      const stream = h2().request({ ':method': 'GET', ':path': path, ':authority': 'orders', authorization: `Bearer ${token()}` });
      stream.setTimeout(CALL_TIMEOUT_MS, () => stream.close(http2.constants.NGHTTP2_CANCEL));
      let outcome: Outcome | undefined;
      stream.on('response', (headers) => {
        outcome = { status: String(headers[':status']), reason: headers['x-meshgate-reason'] as string | undefined };
      });
      stream.on('error', reject);
      stream.on('close', () => (outcome ? resolve(outcome) : reject(new Error(`HTTP/2 stream closed without a response (code ${stream.rstCode})`))));
      stream.resume();
      stream.end();
    });

  const metadata = (): grpc.Metadata => {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token()}`);
    return md;
  };
  const grpcUnary = (message: string): Promise<Outcome> =>
    new Promise((resolve) => {
      echo.Unary({ message }, metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS }, (err) => resolve({ status: `grpc:${err ? err.code : 0}`, reason: undefined }));
    });
  const grpcStream = (message: string): Promise<Outcome> =>
    new Promise((resolve) => {
      const call = echo.ServerStream({ message, count: 3 }, metadata(), { deadline: Date.now() + CALL_TIMEOUT_MS });
      call.on('data', () => {});
      call.on('error', () => {});
      call.on('status', (status: grpc.StatusObject) => resolve({ status: `grpc:${status.code}`, reason: undefined }));
    });

  return {
    run(cls, seq) {
      switch (cls.name) {
        case 'h1 allowed':
          return h1Call(`/orders/${seq}`, true);
        case 'h2 allowed':
          return h2Call(`/orders/${seq}`);
        case 'grpc allowed':
          return grpcUnary(`m${seq}`);
        case 'h1 denied':
          return h1Call(`/admin/users/${seq}`, true);
        case 'h2 denied':
          return h2Call(`/admin/users/${seq}`);
        case 'grpc denied':
          return grpcStream(`s${seq}`);
        case 'h1 no token':
          return h1Call(`/orders/${seq}`, false);
        case 'h1 limited':
          return h1Call(`/limited/${seq}`, true);
        default:
          throw new Error(`unknown call class ${cls.name}`);
      }
    },
    async close() {
      session?.close();
      echo.close();
      await pool.close();
    },
  };
}

/** A fixed order of classes by weight (largest remainder), so every 100 calls carry the same mix. */
function classCycle(classes: readonly CallClass[]): CallClass[] {
  const total = classes.reduce((sum, c) => sum + c.weight, 0);
  const cycle: CallClass[] = [];
  const credit = classes.map(() => 0);
  for (let i = 0; i < total; i++) {
    classes.forEach((c, j) => (credit[j]! += c.weight));
    let best = 0;
    for (let j = 1; j < classes.length; j++) if (credit[j]! > credit[best]!) best = j;
    credit[best]! -= total;
    cycle.push(classes[best]!);
  }
  return cycle;
}

export interface LoadRunner {
  /** Calls issued but not finished. */
  inFlight(): number;
  /** Records of finished calls since the last take (moved out). */
  take(): CallRecord[];
  /** Stops issuing; resolves when every call in flight finished (or after `graceMs`). */
  stop(graceMs: number): Promise<void>;
}

/** Issues `rate` calls per second from now on, in the class cycle, open loop. */
export function startLoad(clients: LoadClients, rate: number, maxInFlight = 5000): LoadRunner {
  const cycle = classCycle(CLASSES);
  const started = performance.now();
  let issued = 0;
  let inFlight = 0;
  let records: CallRecord[] = [];
  let idle: (() => void) | undefined;

  const issue = (): void => {
    const cls = cycle[issued % cycle.length]!;
    const seq = issued++;
    const at = performance.now();
    if (inFlight >= maxInFlight) {
      records.push({ cls: cls.name, at, ms: 0, outcome: 'not sent: too many calls in flight', error: true });
      return;
    }
    inFlight++;
    const timeout = new Promise<Outcome>((resolve) => setTimeout(() => resolve({ status: 'timeout', reason: `no outcome within ${CALL_TIMEOUT_MS + 1000} ms` }), CALL_TIMEOUT_MS + 1000).unref());
    Promise.race([clients.run(cls, seq), timeout])
      .catch((err: unknown): Outcome => ({ status: 'failed', reason: (err as Error).message.slice(0, 120) }))
      .then((outcome) => {
        inFlight--;
        records.push({ cls: cls.name, at, ms: performance.now() - at, outcome: outcomeKey(outcome), error: isError(cls, outcome) });
        if (inFlight === 0) idle?.();
      });
  };

  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - started) / 1000) * rate) - issued;
    for (let i = 0; i < due; i++) issue();
  }, 10);

  return {
    inFlight: () => inFlight,
    take() {
      const out = records;
      records = [];
      return out;
    },
    async stop(graceMs) {
      clearInterval(timer);
      if (inFlight === 0) return;
      await Promise.race([new Promise<void>((resolve) => (idle = resolve)), new Promise((resolve) => setTimeout(resolve, graceMs))]);
    },
  };
}

/** The value at quantile `q` (0..1) of sorted `values`; 0 when empty. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
