import { QUANTITY } from '../config/injector-schema.ts';

/*
 * How many worker processes an injected sidecar runs (`workers` in its
 * config): what its pod gives it, as Istio sizes Envoy's concurrency from
 * the proxy's CPU limit. One process serves one core, so a CPU limit of N
 * cores gets N workers; but each process needs its own memory, so the
 * count also has to fit the memory limit, or a busy sidecar would be
 * OOM-killed instead of merely using one core less.
 */

/** Memory one sidecar process holds under load (bench:mesh: VmHWM 117-128 MiB at 50 connections with the image's --max-semi-space-size=4). */
const MEMORY_PER_PROCESS_BYTES = 128 * 1024 * 1024;
/** Beyond this the primary's fan-out of certificates and snapshots, and the memory, outweigh another core for one pod's traffic. */
const MAX_DERIVED_WORKERS = 8;
/** The sidecar schema's own bound. */
const MAX_WORKERS = 64;

const SUFFIX: Readonly<Record<string, number>> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** A Kubernetes quantity (`500m`, `2`, `256Mi`) as a number; undefined when it is not one. */
function quantityValue(text: string): number | undefined {
  if (!QUANTITY.test(text)) return undefined;
  const match = /^(\d+(?:\.\d+)?)(.*)$/.exec(text)!;
  return Number(match[1]) * SUFFIX[match[2]!]!;
}

/**
 * The workers for a sidecar with these limits; `override` is the pod's
 * meshgate.dev/proxy-workers annotation, which wins (a problem when it is
 * not a whole number from 1 to 64). Without a CPU limit: 1, the one-process
 * sidecar. With N > 1 the pod runs N + 1 processes (a primary and N workers),
 * so N is the largest that fits the memory limit at MEMORY_PER_PROCESS_BYTES
 * each, and 1 when even two do not fit.
 */
export function sidecarWorkers(limits: { readonly cpu?: string | undefined; readonly memory?: string | undefined }, override: string | undefined, problems: string[], annotation: string): number {
  if (override !== undefined) {
    const n = Number(override);
    if (/^\d{1,2}$/.test(override) && n >= 1 && n <= MAX_WORKERS) return n;
    problems.push(`${annotation}: expected a whole number of worker processes from 1 to ${MAX_WORKERS}, got ${JSON.stringify(override)}`);
    return 1;
  }
  const cores = limits.cpu === undefined ? undefined : quantityValue(limits.cpu);
  if (cores === undefined || cores < 2) return 1;
  let workers = Math.min(Math.floor(cores), MAX_DERIVED_WORKERS);
  const memory = limits.memory === undefined ? undefined : quantityValue(limits.memory);
  if (memory !== undefined) workers = Math.min(workers, Math.floor(memory / MEMORY_PER_PROCESS_BYTES) - 1);
  return workers >= 2 ? workers : 1;
}
