import { readFileSync } from 'node:fs';
import { groupPids } from './tls-cpu.ts';

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
