import { fileURLToPath } from 'node:url';
import type { OpenLoopJob, OpenLoopReport } from './open-loop-client.ts';
import type { ProcessGroup } from './processes.ts';
import { describeExit, firstOutputLine, settlesWithin } from './processes.ts';

const CLIENT_SCRIPT = fileURLToPath(new URL('open-loop-client.ts', import.meta.url));

/** Runs the fixed-rate load generator (lib/open-loop-client.ts) once in its own process and returns its report. */
export async function runOpenLoop(group: ProcessGroup, job: OpenLoopJob): Promise<OpenLoopReport> {
  let line: string | undefined;
  const child = group.spawn({
    name: 'open-loop',
    command: process.execPath,
    args: [CLIENT_SCRIPT, JSON.stringify(job)],
    ipc: true,
    onStdoutLine: (l) => {
      line ??= l;
    },
  });
  // The client ends itself (its own deadline is the schedule plus one timeout plus 5 s); this margin covers its start-up.
  const limitS = job.warmupS + job.durationS + job.timeoutMs / 1000 + 20;
  if (!(await settlesWithin(child.exited, limitS * 1000))) {
    await child.stop(500);
    throw new Error(`open-loop load generator did not finish within ${limitS}s`);
  }
  await child.stop(0);
  const exit = await child.exited;
  if (exit.code !== 0 || line === undefined) throw new Error(`open-loop load generator ${describeExit(exit)}: ${firstOutputLine(child) ?? 'no output'}`);
  return JSON.parse(line) as OpenLoopReport;
}
