/** What every load generator is asked to do and reports, in the same units. */

export interface LoadRequest {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly durationS: number;
  readonly connections: number;
  /** GET when absent. */
  readonly method?: string | undefined;
  /** Request body sent with every request (bench:mesh: a small JSON document). */
  readonly body?: string | undefined;
}

export interface LoadResult {
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly requests: number;
  /** Connect/read/write errors and timeouts. */
  readonly errors: number;
  /** Responses outside 2xx/3xx (wrk) or 2xx (autocannon). */
  readonly non2xx: number;
}

export interface LoadGenerator {
  readonly name: string;
  readonly version: string;
  readonly run: (request: LoadRequest) => Promise<LoadResult>;
}
