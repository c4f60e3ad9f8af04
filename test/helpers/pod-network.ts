import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { createNetns, deleteNetns, must, uniqueName } from './netns.ts';

/*
 * "Pods" as network namespaces on one bridge, for the interception e2e. The
 * bridge lives in a namespace of its own, so the host's namespace gets no
 * interface, address or rule. Every namespace is named PREFIX + run id + role:
 * a crashed run's leftovers are swept by prefix (and age) at the next start.
 */

export const POD_NET_PREFIX = 'mge-';

export interface Pod {
  readonly ns: string;
  readonly ip: string;
}

export interface PodProcess {
  readonly child: ChildProcess;
  /** Everything it printed, for failure messages. */
  output(): string;
  /** Resolves with the first line (stdout or stderr) that satisfies `match`. */
  line(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface PodNetwork {
  readonly id: string;
  /** A pod namespace with eth0 = 10.254.1.<host>/24 on the bridge and `hosts` as its /etc/hosts. */
  addPod(role: string, host: number, hosts: string): Promise<Pod>;
  /** Runs `command` inside `pod`, as root or (with uid) as that uid and gid with no capabilities. */
  spawn(pod: Pod, command: string, args: readonly string[], opts?: { uid?: number }): PodProcess;
  /** Kills every process and deletes every namespace of this network. */
  close(): Promise<void>;
}

export async function createPodNetwork(): Promise<PodNetwork> {
  const id = uniqueName('').slice(0, 4);
  const names: string[] = [];
  const processes: PodProcess[] = [];
  const bridge = `${POD_NET_PREFIX}${id}-br`;
  await createNetns(bridge);
  names.push(bridge);
  await must('ip', ['-n', bridge, 'link', 'add', 'br0', 'type', 'bridge']);
  await must('ip', ['-n', bridge, 'link', 'set', 'br0', 'up']);

  return {
    id,
    async addPod(role, host, hosts) {
      const ns = `${POD_NET_PREFIX}${id}-${role}`;
      await createNetns(ns, hosts);
      names.push(ns);
      const ip = `10.254.1.${host}`;
      await must('ip', ['-n', bridge, 'link', 'add', `v-${role}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      await must('ip', ['-n', bridge, 'link', 'set', `v-${role}`, 'master', 'br0', 'up']);
      await must('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      return { ns, ip };
    },
    spawn(pod, command, args, opts = {}) {
      const drop = opts.uid === undefined ? [] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', '--inh-caps=-all'];
      const child = spawn('ip', ['netns', 'exec', pod.ns, ...drop, command, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      const label = `${[command, ...args]
        .map((a) => path.basename(a))
        .slice(0, 3)
        .join(' ')} in ${pod.ns}`;
      let output = '';
      let pending = '';
      const lines: string[] = [];
      const waiters: Array<() => void> = [];
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk;
        pending += chunk;
        const parts = pending.split('\n');
        pending = parts.pop()!;
        lines.push(...parts);
        for (const wake of waiters.splice(0)) wake();
      });
      // stderr lines count too: tcpdump says "listening on" there.
      let pendingErr = '';
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk;
        pendingErr += chunk;
        const parts = pendingErr.split('\n');
        pendingErr = parts.pop()!;
        lines.push(...parts);
        for (const wake of waiters.splice(0)) wake();
      });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.once('exit', () => {
        for (const wake of waiters.splice(0)) wake();
      });
      const proc: PodProcess = {
        child,
        output: () => output,
        async line(match, timeoutMs = 20_000) {
          const deadline = Date.now() + timeoutMs;
          let seen = 0;
          for (;;) {
            for (; seen < lines.length; seen++) if (match(lines[seen]!)) return lines[seen]!;
            if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${label} exited (${child.exitCode ?? child.signalCode}): ${output.slice(-2000)}`);
            const left = deadline - Date.now();
            if (left <= 0) throw new Error(`${label}: no expected line within ${timeoutMs} ms: ${output.slice(-2000)}`);
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, left);
              waiters.push(() => {
                clearTimeout(timer);
                resolve();
              });
            });
          }
        },
        async kill(signal = 'SIGKILL') {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill(signal);
          const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
          await exited;
          clearTimeout(timer);
        },
      };
      processes.push(proc);
      return proc;
    },
    async close() {
      await Promise.all(processes.map((p) => p.kill('SIGKILL')));
      for (const name of names) await deleteNetns(name);
    },
  };
}
