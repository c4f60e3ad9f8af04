import path from 'node:path';
import type { ParseArgsOptionsConfig } from 'node:util';
import type { ZodType } from 'zod';
import type { TracingConfig } from '../config/telemetry-schema.ts';
import type { Clock, Random } from '../core/clock.ts';
import { freeCompileMemoryPromptly } from '../core/compiler-memory.ts';
import { releaseHeapWhenQuiet } from '../core/heap-release.ts';
import { nodeUtil } from '../core/node-builtins.ts';
import type { LogDrops, Logger } from '../telemetry/logger.ts';
import type { Tracing, TracingIdentity } from '../telemetry/tracing.ts';
import { UsageError } from './usage-error.ts';

const { parseArgs } = nodeUtil;

/** What every role's `start` is given: the same for the sidecar, the CA and the policy server. */
interface RoleDeps {
  readonly logger: Logger;
  readonly clock: Clock;
  readonly random: Random;
  readonly defaultMetrics: true;
  readonly configFile: string;
  readonly configDir: string;
  /** Started here from `telemetry.tracing` and the OTEL_* environment; shut down here after `stop`. */
  readonly tracing: Tracing;
  readonly logDrops: LogDrops;
}

/** Config fields runRole reads itself; every role's schema has them. */
interface RoleConfig {
  readonly log: { readonly level: string };
  readonly telemetry: { readonly tracing?: TracingConfig | undefined };
}

/**
 * One long-running role as the CLI runs it. Modules are loaded on demand
 * (in `schema` and `start`) so `--help` and the other commands start fast.
 */
export interface RoleDescriptor<C extends RoleConfig, R> {
  /** The command name: also the logger's name and the prefix of usage errors. */
  readonly name: string;
  /** Flags besides `--config`. */
  readonly flags?: ParseArgsOptionsConfig;
  schema(): Promise<ZodType<C>>;
  /** Applies the extra flags to the loaded config (throws UsageError on a bad value). */
  withFlags?(config: C, values: Readonly<Record<string, unknown>>): C;
  /** grpc-js diagnostics go to the JSON log (the roles that serve gRPC). */
  readonly grpc?: boolean;
  /**
   * Gives its grown heap back when quiet, after start and after load (src/core/heap-release.ts): the
   * sidecar, whose memory every pod pays. Not the control plane: its collection would pause the CA or
   * the policy server while sidecars that start with it wait for a certificate or a snapshot
   * (bench:mesh's mesh rows start them together).
   */
  releasesHeapWhenQuiet?(config: C): boolean;
  tracing(config: C): TracingIdentity;
  /** Other processes write to this one's stdout (a sidecar's workers): see createLogger's sharedStdout. */
  sharedStdout?(config: C): boolean;
  start(config: C, deps: RoleDeps): Promise<R>;
  /** After SIGTERM or SIGINT: drain or close; tracing is shut down after it. */
  stop(running: R, ctx: { readonly signal: string; readonly logger: Logger; readonly config: C }): Promise<void>;
  /** Resolves when the running role cannot go on (a sidecar's worker that keeps dying): it is stopped and the exit code is 1. */
  failure?(running: R): Promise<Error> | undefined;
}

/**
 * The bootstrap every role shares: flags, config read and validated once,
 * logger, tracing, start, then run until a signal and stop. A bad flag or
 * file throws (UsageError, ConfigError) and main turns it into one line and
 * exit code 2; after a signal the role stops and the exit code is 0.
 */
export async function runRole<C extends RoleConfig, R>(role: RoleDescriptor<C, R>, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' }, ...role.flags }, strict: true });
  const configFile = values.config;
  if (typeof configFile !== 'string' || configFile === '') throw new UsageError(`meshgate ${role.name}: missing --config FILE`);
  const [{ loadConfigFile }, schema] = await Promise.all([import('../config/load.ts'), role.schema()]);
  const loaded = await loadConfigFile(configFile, schema);
  const config = role.withFlags ? role.withFlags(loaded, values) : loaded;
  const [{ systemClock }, { createLogger, createLogDrops }, { startTracing }] = await Promise.all([import('../core/clock.ts'), import('../telemetry/logger.ts'), import('../telemetry/tracing.ts')]);
  const logDrops = createLogDrops();
  const logger = createLogger({ level: config.log.level, name: role.name, sharedStdout: role.sharedStdout?.(config) ?? false, drops: logDrops.add });
  if (role.grpc) await grpcDiagnosticsToLog(logger);
  // The CLI is the one place that reads the environment: OTEL_* joins the file's section here.
  const tracing = await startTracing(config.telemetry.tracing, process.env, { logger, ...role.tracing(config) });
  let running: R;
  try {
    running = await role.start(config, {
      logger,
      clock: systemClock,
      random: Math.random,
      defaultMetrics: true,
      configFile,
      configDir: path.dirname(path.resolve(configFile)),
      tracing,
      logDrops,
    });
  } catch (err) {
    await tracing.shutdown();
    throw err;
  }
  const stopRelease = role.releasesHeapWhenQuiet?.(config) ? releaseMemoryAfterStart(logger) : () => {};
  return untilSignal(
    logger,
    async (signal) => {
      stopRelease();
      await role.stop(running, { signal, logger, config });
      await tracing.shutdown(); // the last calls' spans leave before exit
    },
    role.failure?.(running),
  );
}

/**
 * Start-up is over: from now on each optimizing compile's working memory is freed as it ends
 * (src/core/compiler-memory.ts), and the heap, with what load later grows it by, goes back to the OS
 * at quiet moments (src/core/heap-release.ts). Returns a cancel function (a role that stops first).
 */
export function releaseMemoryAfterStart(logger: Pick<Logger, 'debug'>): () => void {
  freeCompileMemoryPromptly();
  return releaseHeapWhenQuiet((release) => {
    if (release === undefined) logger.debug('heap not released: V8 gave no gc function or refused the call');
    else logger.debug({ blockedMs: Math.round(release.blockedMs), heapBytesBefore: release.heapBytesBefore, heapBytesAfter: release.heapBytesAfter }, 'heap released');
  });
}

/**
 * grpc-js writes its own diagnostics to console.error (a process-wide setting):
 * route them into the JSON log at debug, so stderr keeps the one-line error contract.
 */
async function grpcDiagnosticsToLog(logger: Logger): Promise<void> {
  const grpc = await import('@grpc/grpc-js');
  const grpcLog = logger.child({ component: 'grpc-js' });
  grpc.setLogger({ error: (...args: unknown[]) => grpcLog.debug(args.map(String).join(' ')) });
}

/**
 * Runs until SIGTERM or SIGINT, then `stop` once (a second signal during the stop is ignored), flushes the
 * log and resolves with exit code 0: the shutdown every long-running command shares.
 * When `failure` resolves first, the same stop, logged, and exit code 1. A stop that fails is logged
 * and gives exit code 1 too, instead of an unhandled rejection. Its signal listeners are gone once it
 * resolves, so a process (or a test) that runs several roles does not collect them.
 */
export function untilSignal(logger: { flush(): void; error(fields: object, message: string): void }, stop: (signal: string) => Promise<void>, failure?: Promise<Error>): Promise<number> {
  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: string, code = 0): void => {
      if (stopping) return;
      stopping = true;
      stop(signal)
        .then(
          () => code,
          (err: unknown) => {
            logger.error({ err: err instanceof Error ? err.message : String(err) }, 'stop failed');
            return 1;
          },
        )
        .then((exitCode) => {
          process.removeListener('SIGTERM', onTerm);
          process.removeListener('SIGINT', onInt);
          logger.flush();
          resolve(exitCode);
        });
    };
    // Kept until the stop is over (not `once`): a second signal during the drain is swallowed here instead
    // of killing the process with the default action.
    const onTerm = (): void => onSignal('SIGTERM');
    const onInt = (): void => onSignal('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
    void failure?.then((err) => {
      logger.error({ err: err.message }, 'stopping: the role cannot go on');
      onSignal('failure', 1);
    });
  });
}
