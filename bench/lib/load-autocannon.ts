import { createRequire } from 'node:module';
import type { LoadGenerator, LoadRequest, LoadResult } from './load.ts';

/*
 * Fallback when wrk is not installed: autocannon, in the harness process (which
 * is otherwise idle while it runs). It is itself Node, so it needs more CPU per
 * request than wrk and caps lower on a small machine: compare rows from one run
 * only, never figures from wrk runs with autocannon runs.
 */

interface AutocannonResult {
  readonly duration: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly non2xx: number;
  readonly latency: { readonly p50: number; readonly p99: number };
  readonly requests: { readonly total: number };
}

interface AutocannonInstance extends PromiseLike<AutocannonResult> {
  stop(): void;
}

type Autocannon = (options: Record<string, unknown>) => AutocannonInstance;

export function createAutocannonGenerator(): LoadGenerator {
  const require = createRequire(import.meta.url);
  const autocannon = require('autocannon') as Autocannon;
  const version = (require('autocannon/package.json') as { version: string }).version;
  return {
    name: 'autocannon',
    version,
    run: async (request: LoadRequest): Promise<LoadResult> => {
      const instance = autocannon({
        url: request.url,
        headers: request.headers,
        ...(request.method ? { method: request.method } : {}),
        ...(request.body !== undefined ? { body: request.body } : {}),
        connections: request.connections,
        duration: request.durationS,
        pipelining: 1,
        timeout: 5,
      });
      const limitMs = (request.durationS + 20) * 1000;
      let timer: NodeJS.Timeout | undefined;
      const overdue = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          instance.stop();
          reject(new Error(`autocannon did not finish within ${limitMs / 1000}s`));
        }, limitMs);
      });
      try {
        const result = await Promise.race([Promise.resolve(instance), overdue]);
        return {
          rps: result.requests.total / result.duration,
          p50Ms: result.latency.p50,
          p99Ms: result.latency.p99,
          requests: result.requests.total,
          // autocannon already counts each timeout in `errors`.
          errors: result.errors,
          non2xx: result.non2xx,
        };
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
