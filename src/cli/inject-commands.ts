import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ConfigError } from '../config/load.ts';
import type { Logger } from '../telemetry/logger.ts';

/*
 * `meshgate inject` and `meshgate injector`: Kubernetes injection from the
 * command line and as an admission webhook. Both load the injector config the
 * same way and run the same injectPod (src/inject). Usage problems are thrown
 * as ConfigError: one line on stderr, exit 2, like every other command.
 */

export async function runInject(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      filename: { type: 'string', short: 'f', multiple: true },
      config: { type: 'string', short: 'c' },
      namespace: { type: 'string', short: 'n', default: 'default' },
    },
    strict: true,
  });
  const files = values.filename ?? [];
  if (files.length === 0) throw new ConfigError('meshgate inject: missing -f FILE');
  const [{ loadInjector }, { injectManifests, ManifestError }] = await Promise.all([import('../inject/settings.ts'), import('../inject/manifests.ts')]);
  const { settings } = await loadInjector(values.config);
  const outputs: string[] = [];
  let refused = 0;
  for (const file of files) {
    const text = await readInput(file);
    let result: ReturnType<typeof injectManifests>;
    try {
      result = injectManifests(text, file === '-' ? '(stdin)' : file, settings, values.namespace);
    } catch (err) {
      if (err instanceof ManifestError) throw new ConfigError(err.message);
      throw err;
    }
    for (const report of result.reports) {
      const where = `${file === '-' ? '(stdin)' : file}: document ${report.document} (${report.object})`;
      if (report.outcome.status === 'refused') {
        refused++;
        process.stderr.write(`${where}: cannot inject: ${report.outcome.message}\n`);
      } else if (report.outcome.status === 'skipped') {
        process.stderr.write(`${where}: left alone: ${report.outcome.reason}\n`);
      } else {
        for (const warning of report.outcome.warnings) process.stderr.write(`${where}: warning: ${warning}\n`);
      }
    }
    outputs.push(result.output);
  }
  if (refused > 0) return 1;
  process.stdout.write(joinStreams(outputs));
  return 0;
}

/** Several files become one stream: a document separator between them. */
function joinStreams(outputs: readonly string[]): string {
  return outputs.map((text) => (text.endsWith('\n') ? text : `${text}\n`)).join('---\n');
}

async function readInput(file: string): Promise<string> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`meshgate inject: ${file}: cannot read file (${code === 'ENOENT' ? 'no such file' : (code ?? String(err))})`);
  }
}

/** A started webhook: main.ts runs it until a signal, then calls stop. */
export interface RunningInjector {
  readonly logger: Logger;
  stop(signal: string): Promise<void>;
}

export async function startInjectorCommand(args: string[]): Promise<RunningInjector> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, strict: true });
  if (!values.config) throw new ConfigError('meshgate injector: missing --config FILE');
  const [{ loadInjector }, { createInjectorServer }, { createLogger }, { systemClock }] = await Promise.all([
    import('../inject/settings.ts'),
    import('../inject/webhook-server.ts'),
    import('../telemetry/logger.ts'),
    import('../core/clock.ts'),
  ]);
  const { config, settings, resolve } = await loadInjector(values.config);
  if (!config.tls) throw new ConfigError(`${values.config}: tls: missing required field (the webhook serves HTTPS: certFile and keyFile)`);
  const read = async (field: string, file: string): Promise<string> => {
    try {
      return await readFile(resolve(file), 'utf8');
    } catch (err) {
      throw new ConfigError(`${values.config}: ${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
  };
  const tls = { cert: await read('tls.certFile', config.tls.certFile), key: await read('tls.keyFile', config.tls.keyFile) };
  const logger = createLogger({ level: config.log.level, name: 'injector' });
  let server: ReturnType<typeof createInjectorServer>;
  try {
    const reloadFrom = { certFile: resolve(config.tls.certFile), keyFile: resolve(config.tls.keyFile) };
    server = createInjectorServer({ settings, tls, reloadFrom, logger, clock: systemClock, defaultMetrics: true });
  } catch (err) {
    // A key that does not match its certificate, or PEM that does not parse.
    throw new ConfigError(`${values.config}: tls: ${(err as Error).message.split('\n')[0]}`);
  }
  const address = await server.listen(config.listen.port, config.listen.address);
  logger.info({ address: address.address, port: address.port, image: config.sidecar.image }, 'injector listening');
  return {
    logger,
    async stop(signal) {
      logger.info({ signal }, 'stopping');
      await server.close();
    },
  };
}

export async function runCertsWebhook(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      dir: { type: 'string', default: 'certs' },
      service: { type: 'string', default: 'meshgate-injector' },
      namespace: { type: 'string', default: 'meshgate-system' },
      ttl: { type: 'string', default: '8760h' },
      force: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const dnsLabel = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
  for (const flag of ['service', 'namespace'] as const) {
    if (!dnsLabel.test(values[flag])) throw new ConfigError(`meshgate certs webhook: --${flag}: expected a DNS label, got "${values[flag]}"`);
  }
  const [{ duration }, { writeWebhookCert, WebhookCertError }, { FileExistsError }, { systemClock }] = await Promise.all([
    import('../config/durations.ts'),
    import('../ca/webhook-cert.ts'),
    import('../ca/material-files.ts'),
    import('../core/clock.ts'),
  ]);
  const ttl = duration.safeParse(values.ttl);
  if (!ttl.success || ttl.data <= 0) throw new ConfigError(`meshgate certs webhook: --ttl: expected a duration like 720h or 8760h, got "${values.ttl}"`);
  try {
    const written = await writeWebhookCert({ dir: values.dir, service: values.service, namespace: values.namespace, ttlMs: ttl.data, force: values.force, clock: systemClock });
    for (const file of written) process.stdout.write(`wrote ${file}\n`);
  } catch (err) {
    if (err instanceof FileExistsError || err instanceof WebhookCertError) throw new ConfigError(`meshgate certs webhook: ${err.message}`);
    throw err;
  }
  return 0;
}
