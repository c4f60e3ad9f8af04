import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';

const BIN = path.resolve(import.meta.dirname, '../../bin/meshgate.js');

/** `meshgate sidecar --config FILE` as its own process (what node:cluster needs: workers fork the same entry point). */
export interface SidecarProcess {
  readonly child: ChildProcess;
  /** Every JSON line of stdout so far (the primary's and the workers'). */
  readonly logs: Array<Record<string, unknown>>;
  readonly stderr: () => string;
  /** Ports of the 'sidecar listening' line. */
  readonly ports: { readonly outbound: number; readonly inbound: number; readonly admin: number };
  readonly adminUrl: string;
  /** Resolves with the exit code (or signal) once the process is gone. */
  readonly exited: Promise<number | string>;
}

/**
 * Writes `config` (the YAML document as an object) to `dir` and starts a
 * sidecar on it; resolves once it logs 'sidecar listening', rejects with its
 * stderr when it exits first. Give its listeners port 0: the line says what
 * they bound, and no other process can take a port between test and child.
 * The line is an info one: `log.level` must let it through.
 */
export async function startSidecarProcess(
  config: Record<string, unknown>,
  dir: string,
  timeoutMs = 30_000,
  options: { readonly env?: NodeJS.ProcessEnv; readonly nodeArgs?: readonly string[]; readonly args?: readonly string[] } = {},
): Promise<SidecarProcess> {
  const file = path.join(dir, `sidecar-${Date.now()}.yaml`);
  await writeFile(file, stringify(config));
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), BIN, 'sidecar', '--config', file, ...(options.args ?? [])], { env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  let partial = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  const listening = new Promise<Record<string, unknown>>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.startsWith('{')) continue;
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.msg === 'sidecar listening') resolve(entry);
      }
    });
    void exited.then((code) => reject(new Error(`sidecar exited (${code}) before listening: ${stderr.trim()}`)));
    setTimeout(() => reject(new Error(`sidecar not listening within ${timeoutMs} ms: ${stderr.trim()}`)), timeoutMs).unref();
  });
  const line = await listening.catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  const ports = { outbound: Number(line.outbound), inbound: Number(line.inbound), admin: Number(line.admin) };
  return { child, logs, stderr: () => stderr, ports, adminUrl: `http://127.0.0.1:${ports.admin}`, exited };
}

/** A plaintext sidecar in front of `appUrl` on free loopback ports: the config most process tests start from. */
export function plaintextSidecarConfig(appUrl: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    workload: { service: 'orders', namespace: 'shop' },
    listeners: { outbound: { address: '127.0.0.1', port: 0 }, inbound: { address: '127.0.0.1', port: 0 }, admin: { address: '127.0.0.1', port: 0 } },
    inbound: { app: appUrl },
    mtls: { mode: 'DISABLE' },
    ...extra,
  };
}
