import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { waitForLive } from '../helpers/process.ts';

/*
 * `meshgate <role> --config FILE` as a child process, for the fuzz targets and
 * the soak (bench/soak.ts): a hang or crash cannot stall the caller, and its
 * resident size and open files can be read from /proc. Start-up is given
 * 30 s: these runs share busy machines.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const START_TIMEOUT_MS = 30_000;

export interface ChildMeshgate {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Ports from the role's "listening" log line (sidecar: outbound, inbound, admin). */
  readonly outbound: number;
  readonly inbound: number;
  readonly admin: number;
  /** The last 20 kB of stderr (a crash leaves its stack here). */
  stderr(): string;
}

/** Writes `config` as YAML to `file`, starts the role, and waits for its listening line and /live. */
export async function spawnMeshgate(role: 'sidecar', file: string, config: object, listeningMsg = 'sidecar listening'): Promise<ChildMeshgate> {
  await writeFile(file, stringify(config));
  const child = spawn(process.execPath, ['bin/meshgate.js', role, '--config', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-20_000);
  });
  const listening = listeningLine(child, role, listeningMsg, () => stderr);
  const started = (async () => {
    const ports = await listening;
    await waitForLive(`http://127.0.0.1:${ports.admin}/live`, START_TIMEOUT_MS);
    return ports;
  })();
  // A child that did not come up is not left running behind the test.
  const ports = await started.catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  return { pid: child.pid!, child, ...ports, stderr: () => stderr };
}

function listeningLine(child: ChildProcess, role: string, listeningMsg: string, stderr: () => string): Promise<{ outbound: number; inbound: number; admin: number }> {
  return new Promise<{ outbound: number; inbound: number; admin: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${role}: no '${listeningMsg}' line within ${START_TIMEOUT_MS} ms: ${stderr()}`)), START_TIMEOUT_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${role} exited with ${code}: ${stderr()}`));
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: { msg?: string; outbound: number; inbound: number; admin: number };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        return;
      }
      if (entry.msg !== listeningMsg) return;
      clearTimeout(timer);
      resolve(entry);
    });
  });
}

/** SIGTERM (the role drains), SIGKILL after 5 s. */
export async function stopChild(meshgate: ChildMeshgate | undefined): Promise<void> {
  if (!meshgate || meshgate.child.exitCode !== null || meshgate.child.signalCode !== null) return;
  const exited = once(meshgate.child, 'exit');
  meshgate.child.kill('SIGTERM');
  const timer = setTimeout(() => meshgate.child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}
