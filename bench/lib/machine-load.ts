import { cpus } from 'node:os';

/**
 * Share of all CPU time spent busy over `ms`, sampled before the run starts:
 * the harness is idle then, so this is what other processes take. Anything
 * well above zero makes the figures noisy (the proxies compete for the CPUs).
 */
export async function busyShare(ms: number): Promise<number> {
  const before = totals();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const after = totals();
  const total = after.total - before.total;
  return total <= 0 ? 0 : 1 - (after.idle - before.idle) / total;
}

function totals(): { idle: number; total: number } {
  let idle = 0;
  let total = 0;
  for (const cpu of cpus()) {
    const t = cpu.times;
    idle += t.idle;
    total += t.user + t.nice + t.sys + t.idle + t.irq;
  }
  return { idle, total };
}
