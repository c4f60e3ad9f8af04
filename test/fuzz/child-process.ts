import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { stringify } from 'yaml';
import { spawnMeshgate as startMeshgate, waitForLive } from '../helpers/process.ts';

/*
 * `meshgate <role> --config FILE` as a child process, for the fuzz targets and
 * the soak (bench/soak.ts): a hang or crash cannot stall the caller, and its
 * resident size and open files can be read from /proc. Start-up is given
 * 30 s: these runs share busy machines.
 */

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
  const meshgate = await startMeshgate([role, '--config', file], { listening: listeningMsg, timeoutMs: START_TIMEOUT_MS });
  const { outbound, inbound, admin } = meshgate.listening as { outbound: number; inbound: number; admin: number };
  // A child that did not come up is not left running behind the test.
  await waitForLive(`http://127.0.0.1:${admin}/live`, START_TIMEOUT_MS).catch(async (err: unknown) => {
    await meshgate.kill();
    throw err;
  });
  return { pid: meshgate.child.pid!, child: meshgate.child, outbound, inbound, admin, stderr: meshgate.stderr };
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
