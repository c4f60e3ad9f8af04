import type { LoadGenerator, LoadRequest, LoadResult } from './load.ts';
import { median } from './stats.ts';

export interface MeasuredRuns {
  readonly runs: LoadResult[];
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/**
 * Warm-up (unmeasured), then `runs` measured runs of one target, each logged as
 * it ends; the row reports medians. Every bench entry point measures this way.
 */
export async function measureRuns(
  loadgen: LoadGenerator,
  request: Omit<LoadRequest, 'durationS'>,
  settings: { readonly warmupS: number; readonly durationS: number; readonly runs: number },
  label: string,
  log: (line: string) => void,
): Promise<MeasuredRuns> {
  if (settings.warmupS > 0) {
    log(`${label}: warm-up ${settings.warmupS}s`);
    await loadgen.run({ ...request, durationS: settings.warmupS });
  }
  const runs: LoadResult[] = [];
  for (let i = 1; i <= settings.runs; i++) {
    const result = await loadgen.run({ ...request, durationS: settings.durationS });
    runs.push(result);
    log(
      `${label}: run ${i}/${settings.runs}: ${Math.round(result.rps)} req/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms` +
        (result.errors + result.non2xx > 0 ? `, ${result.errors} errors, ${result.non2xx} non-2xx` : ''),
    );
  }
  return { runs, rps: median(runs.map((r) => r.rps)), p50Ms: median(runs.map((r) => r.p50Ms)), p99Ms: median(runs.map((r) => r.p99Ms)) };
}
