import type { PrimaryChannel } from '../sidecar/workers/worker.ts';
import { UsageError } from './usage-error.ts';

/**
 * The bootstrap of one worker process of a sidecar with `workers: N`
 * (src/sidecar/workers/): what runRole is for a role, with the config, the
 * certificate and the policy from the primary instead of files, so a
 * restarted worker runs what its siblings run even if the file changed.
 * SIGTERM drains this worker alone (the primary starts another); SIGINT is
 * left to the primary, which a terminal's Ctrl-C reaches too and which
 * drains every worker.
 */
export async function runSidecarWorker(): Promise<number> {
  if (typeof process.send !== 'function') throw new UsageError('meshgate: MESHGATE_SIDECAR_WORKER is set, but this process was not started by a sidecar primary (unset it)');
  const { connectToPrimary } = await import('../sidecar/workers/worker.ts');
  const link = connectToPrimary(process as PrimaryChannel);
  process.on('SIGINT', () => {});
  process.once('SIGTERM', () => link.stop());
  const init = await link.init;
  const config = init.config;
  const [{ systemClock }, { createLogger, createLogDrops }, { startTracing }, { SIDECAR_ROLE }, { releaseMemoryAfterStart }] = await Promise.all([
    import('../core/clock.ts'),
    import('../telemetry/logger.ts'),
    import('../telemetry/tracing.ts'),
    import('./roles.ts'),
    import('./run-role.ts'),
  ]);
  // Every line of a worker says which one wrote it: the workers share stdout.
  const logDrops = createLogDrops();
  const logger = createLogger({ level: config.log.level, name: 'sidecar', sharedStdout: true, drops: logDrops.add }).child({ worker: init.worker });
  const tracing = await startTracing(config.telemetry.tracing, process.env, { logger, ...SIDECAR_ROLE.tracing(config) });
  const code = await link.serve({
    logger,
    clock: systemClock,
    random: Math.random,
    tracing,
    defaultMetrics: true,
    logDrops,
    onStarted: SIDECAR_ROLE.releasesHeapWhenQuiet?.(config) ? () => releaseMemoryAfterStart(logger) : undefined,
  });
  await tracing.shutdown(); // the last calls' spans leave before exit
  logger.flush();
  // Drained: closing the channel ends the process (node:cluster exits a worker on disconnect; pino flushes on exit).
  // A failed start returns 1 instead, for the CLI to exit with.
  if (code === 0) process.disconnect?.();
  return code;
}
