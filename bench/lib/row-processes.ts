import { readdirSync, readFileSync } from 'node:fs';
import { groupCpuMs, groupPids } from './tls-cpu.ts';

/*
 * The processes of one bench:mesh row (sidecars, nginx instances, the control
 * plane and the OTLP sink), each spawned in its own process group, and what
 * /proc says about their memory. CPU comes from lib/tls-cpu.ts (groupCpuMs).
 */

export interface RowProcess {
  readonly name: string;
  /** Process group id (= the pid of the process we spawned). */
  readonly pgid: number;
  /** `proxy`: on the request path (sidecar, nginx), shown in the tables; `support`: the control plane and the OTLP sink. */
  readonly role: 'proxy' | 'support';
  /** meshgate only: ms from spawn to the first 200 on /ready, one per start. */
  readonly readyMs?: readonly number[];
}

/** Called by a row's target once everything is ready, before the first request. */
export type OnRowStarted = (processes: readonly RowProcess[]) => Promise<void>;

export interface MemoryKiB {
  /** VmRSS now. */
  readonly rssKiB: number;
  /** VmHWM: the peak resident size since the process started. */
  readonly hwmKiB: number;
  /**
   * RssAnon now: the process's own pages. The rest of VmRSS is mostly the
   * node binary's pages, mapped from one file and shared by every Node
   * process on the machine (every sidecar on a Kubernetes node), so this is
   * what one more pod adds.
   */
  readonly anonKiB: number;
}

/** Sum over the group's processes (nginx: master and worker), or over `pids` when known; undefined when /proc has none of them. */
export function groupMemory(pgid: number, pids: readonly number[] = groupPids(pgid)): MemoryKiB | undefined {
  let rssKiB = 0;
  let hwmKiB = 0;
  let anonKiB = 0;
  let found = false;
  for (const pid of pids) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      rssKiB += Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
      hwmKiB += Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
      anonKiB += Number(/^RssAnon:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
      found = true;
    } catch {
      // exited meanwhile
    }
  }
  return found ? { rssKiB, hwmKiB, anonKiB } : undefined;
}

export interface RssSampler {
  /** Stops sampling; the largest VmRSS seen per process group. */
  stop(): Map<number, number>;
}

/** Samples VmRSS of each group every `everyMs` (a GC can free memory between two samples; VmHWM catches the true peak). */
export function sampleRss(pgids: readonly number[], everyMs: number): RssSampler {
  const peaks = new Map<number, number>();
  // The members once (a scan of all of /proc): the groups do not fork under load, and the sampler must stay light.
  const members = new Map(pgids.map((pgid) => [pgid, groupPids(pgid)]));
  const sample = (): void => {
    for (const pgid of pgids) {
      const memory = groupMemory(pgid, members.get(pgid));
      if (memory !== undefined) peaks.set(pgid, Math.max(peaks.get(pgid) ?? 0, memory.rssKiB));
    }
  };
  sample();
  const timer = setInterval(sample, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      return peaks;
    },
  };
}

/** What a waiting process costs its node: every pod's proxy pays it while no call comes. */
export interface IdleCost {
  /** CPU of the process group, in % of one core. */
  readonly cpuPercent: number;
  /** Times the group's threads were woken (voluntary context switches): timers, keepalives, samplers. */
  readonly wakeupsPerS: number;
}

/** Idle CPU and wake-ups of each group over `windowMs` of no traffic. */
export async function measureIdleCost(processes: readonly RowProcess[], windowMs: number): Promise<Map<number, IdleCost>> {
  const read = (pgid: number): { cpuMs: number; wakeups: number } | undefined => {
    const cpuMs = groupCpuMs(pgid);
    const wakeups = groupWakeups(pgid);
    return cpuMs === undefined || wakeups === undefined ? undefined : { cpuMs, wakeups };
  };
  const before = new Map(processes.map((p) => [p.pgid, read(p.pgid)]));
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  const costs = new Map<number, IdleCost>();
  for (const p of processes) {
    const a = before.get(p.pgid);
    const b = read(p.pgid);
    if (a && b) costs.set(p.pgid, { cpuPercent: ((b.cpuMs - a.cpuMs) / windowMs) * 100, wakeupsPerS: ((b.wakeups - a.wakeups) * 1000) / windowMs });
  }
  return costs;
}

/** Voluntary context switches of every thread of the group's processes; undefined without /proc. */
function groupWakeups(pgid: number): number | undefined {
  let total = 0;
  let found = false;
  for (const pid of groupPids(pgid)) {
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
        total += Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(status)?.[1] ?? 0);
        found = true;
      }
    } catch {
      // exited meanwhile
    }
  }
  return found ? total : undefined;
}
