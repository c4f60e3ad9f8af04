import { parseArgs } from 'node:util';
import { ConfigError } from '../config/load.ts';

/** A usage problem: printed as one line, exit code 2. */
class UsageError extends Error {}

const HELP: Record<string, string> = {
  '': `meshgate: a service-mesh sidecar proxy and its control plane

Usage: meshgate <command> [options]

Commands:
  sidecar --config FILE   run the sidecar (outbound :15001, inbound :15006, admin :15000)
  demo                    run a local mesh on loopback and print calls as they happen
  help [command]          show help

Run 'meshgate <command> --help' for a command's options.`,
  sidecar: `Usage: meshgate sidecar --config FILE

Runs one sidecar next to a workload. FILE is YAML; see "Configuration reference"
in the README. A bad file exits with status 2 and one line: file, field, problem.
SIGTERM or SIGINT drains: no new calls, in-flight calls finish (drain.timeout), exit 0.`,
  demo: `Usage: meshgate demo [--calls N]

Starts two echo services, each behind its own sidecar on 127.0.0.1, and sends
calls between them through both sidecars, printing each as it happens.`,
};

type Command = (args: string[]) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  sidecar: runSidecar,
  demo: async (args) => (await import('../demo/demo.ts')).runDemo(args),
  help: async (args) => {
    process.stdout.write(`${HELP[args[0] ?? ''] ?? HELP['']!}\n`);
    return 0;
  },
};

async function runSidecar(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, strict: true });
  if (!values.config) throw new UsageError('meshgate sidecar: missing --config FILE');
  // Loaded on demand so `--help` and other commands start fast.
  const [{ loadConfigFile }, { sidecarConfigSchema }] = await Promise.all([import('../config/load.ts'), import('../config/sidecar-schema.ts')]);
  const config = await loadConfigFile(values.config, sidecarConfigSchema);
  const [{ systemClock }, { startSidecar }, { createLogger }] = await Promise.all([
    import('../core/clock.ts'),
    import('../sidecar/sidecar.ts'),
    import('../telemetry/logger.ts'),
  ]);
  const logger = createLogger({ level: config.log.level, name: 'sidecar' });
  const sidecar = await startSidecar(config, {
    logger,
    clock: systemClock,
    random: Math.random,
    defaultMetrics: true,
    configFile: values.config,
  });
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal, timeoutMs: config.drain.timeout }, 'draining');
      sidecar.drain().then(({ completed }) => {
        logger.info({ completed }, 'drained');
        logger.flush();
        resolve(0);
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

export async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv;
  if (command === '--help' || command === '-h') return COMMANDS.help!([]);
  if (command === '--version') {
    process.stdout.write('meshgate 0.1.0\n');
    return 0;
  }
  const run = COMMANDS[command];
  try {
    if (!run) throw new UsageError(`meshgate: unknown command "${command}" (try meshgate --help)`);
    if (rest.includes('--help') || rest.includes('-h')) return COMMANDS.help!([command]);
    return await run(rest);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof UsageError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`meshgate ${command}: ${(err as Error).message.split('\n')[0]}\n`);
      return 2;
    }
    if ((err as { code?: string }).code === 'EADDRINUSE') {
      process.stderr.write(`meshgate ${command}: address in use: ${(err as { address?: string; port?: number }).address}:${(err as { port?: number }).port}\n`);
      return 1;
    }
    throw err;
  }
}
