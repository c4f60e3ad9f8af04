import { fileURLToPath } from 'node:url';
import { readListeningPort } from './http-probe.ts';
import type { Child, ProcessGroup } from './processes.ts';

/**
 * Starts one of the servers in bench/servers/ in its own Node process (the
 * harness's own node, so the same version) and returns its port.
 */
export async function startNodeServer(group: ProcessGroup, name: string, script: string, args: readonly string[], deadlineMs: number): Promise<{ child: Child; port: number }> {
  let resolveLine: (line: string) => void = () => {};
  const firstLine = new Promise<string>((resolve) => {
    resolveLine = resolve;
  });
  const child = group.spawn({
    name,
    command: process.execPath,
    args: [fileURLToPath(new URL(`../servers/${script}`, import.meta.url)), ...args],
    ipc: true,
    onStdoutLine: (line) => resolveLine(line),
  });
  try {
    return { child, port: await readListeningPort(child, firstLine, deadlineMs) };
  } catch (err) {
    await child.stop(500);
    throw err;
  }
}
