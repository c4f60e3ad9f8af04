import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';

/*
 * CPU accounting for `npm run bench:tls` (Linux /proc; elsewhere every figure
 * is undefined and the table says n/a).
 *
 * Per target: CPU time its process group (sidecar, or nginx master + worker)
 * used during a run, divided by the connections completed. That cost per
 * handshake does not depend on who was the bottleneck, so it still compares
 * the two servers when the load generator, not the server, saturates a core.
 *
 * Per run: CPU the rest of the machine used meanwhile (all CPU time minus ours),
 * i.e. what other engineers' tests took from the run.
 */

let clockTicksPerSecond: number | undefined;

function ticksPerSecond(): number {
  if (clockTicksPerSecond === undefined) {
    const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const value = Number(out.stdout?.trim());
    clockTicksPerSecond = Number.isFinite(value) && value > 0 ? value : 100;
  }
  return clockTicksPerSecond;
}

interface GroupMember {
  readonly pid: number;
  readonly cpuTicks: number;
}

/** Processes of group `pgid` with their CPU ticks (user + system, own and waited-for children); undefined without /proc. */
function groupMembers(pgid: number): GroupMember[] | undefined {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return undefined;
  }
  const members: GroupMember[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // Fields after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) !== pgid) continue;
    members.push({ pid: Number(entry), cpuTicks: Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]) });
  }
  return members;
}

/** CPU milliseconds of every process in group `pgid`, or undefined without /proc. */
export function groupCpuMs(pgid: number | undefined): number | undefined {
  if (pgid === undefined) return undefined;
  const members = groupMembers(pgid);
  if (members === undefined) return undefined;
  return (members.reduce((sum, m) => sum + m.cpuTicks, 0) * 1000) / ticksPerSecond();
}

/** Pids of group `pgid` (the group leader alone when /proc cannot be read). */
export function groupPids(pgid: number): number[] {
  const members = groupMembers(pgid);
  return members === undefined || members.length === 0 ? [pgid] : members.map((m) => m.pid);
}

export interface MachineSample {
  readonly busyMs: number;
  readonly totalMs: number;
}

/** All CPUs' busy and total time so far (ms summed over CPUs). */
export function machineSample(): MachineSample {
  let idle = 0;
  let total = 0;
  for (const cpu of cpus()) {
    const t = cpu.times;
    idle += t.idle;
    total += t.user + t.nice + t.sys + t.idle + t.irq;
  }
  return { busyMs: total - idle, totalMs: total };
}
