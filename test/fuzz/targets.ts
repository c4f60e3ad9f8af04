/*
 * The fuzz targets, by name: each has a folder of stored failing inputs under
 * test/fuzz/regressions/<name>/. scripts/fuzz.ts splits a long run's time over
 * this list, so a target missing here would get no time (the harness refuses it).
 */
export const FUZZ_TARGETS = ['path-normalize', 'request-target', 'policy-decode', 'policy-compile', 'config-load', 'jwt-header', 'listener-http1', 'listener-http2'] as const;

export type FuzzTargetName = (typeof FUZZ_TARGETS)[number];

/** Test files run on this many vitest workers at once (vitest.config.ts maxWorkers). */
export const FUZZ_WORKERS = 2;
