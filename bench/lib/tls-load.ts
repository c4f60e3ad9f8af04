import { fileURLToPath } from 'node:url';
import type { ProcessGroup } from './processes.ts';
import { describeExit, firstOutputLine, settlesWithin } from './processes.ts';
import type { TlsClientJob, TlsClientReport } from './tls-client.ts';

const CLIENT_SCRIPT = fileURLToPath(new URL('tls-client.ts', import.meta.url));

/** Runs the load generator (lib/tls-client.ts) once in its own process and returns its report. */
export async function runTlsClient(group: ProcessGroup, job: TlsClientJob): Promise<TlsClientReport> {
  let line: string | undefined;
  const child = group.spawn({
    name: 'tls-client',
    command: process.execPath,
    args: [CLIENT_SCRIPT, JSON.stringify(job)],
    ipc: true,
    onStdoutLine: (l) => {
      line ??= l;
    },
  });
  // The client stops by itself after the duration; the margin covers start-up and its 5 s connection timeout.
  const limitS = job.durationS + 20;
  if (!(await settlesWithin(child.exited, limitS * 1000))) {
    await child.stop(500);
    throw new Error(`load generator did not finish within ${limitS}s`);
  }
  await child.stop(0);
  const exit = await child.exited;
  if (exit.code !== 0 || line === undefined) throw new Error(`load generator ${describeExit(exit)}: ${firstOutputLine(child) ?? 'no output'}`);
  return JSON.parse(line) as TlsClientReport;
}
