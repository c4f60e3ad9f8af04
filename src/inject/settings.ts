import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { InjectorConfig, InjectorConfigInput } from '../config/injector-schema.ts';
import { injectorConfigSchema } from '../config/injector-schema.ts';
import { ConfigError, deepFreeze, loadConfigFile } from '../config/load.ts';
import type { InjectionSettings } from './pod-injection.ts';

/** Where `meshgate inject` looks for the trust bundle without --config: the default output of `meshgate certs init`. */
const DEFAULT_TRUST_BUNDLE = 'certs/trust-bundle.pem';

/**
 * `meshgate inject` without --config: the mesh of deploy/k8s (its injector
 * config, deploy/k8s/base/config/injector.yaml, says the same; a test keeps
 * them equal), so a file injected by hand matches what the webhook adds.
 */
export const DEFAULT_INJECTOR_CONFIG: InjectorConfigInput = {
  mesh: {
    trustBundleFile: DEFAULT_TRUST_BUNDLE,
    redisUrl: 'redis://meshgate-redis.meshgate-system.svc:6379',
    tracing: { exporter: 'otlp-grpc', endpoint: 'http://jaeger-collector.meshgate-system.svc:4317' },
  },
};

export interface LoadedInjector {
  readonly config: InjectorConfig;
  readonly settings: InjectionSettings;
  /** Resolves a path of the config file (relative to its folder). */
  resolve(file: string): string;
}

/**
 * The injector config and the trust bundle it names. Without a config file
 * (`meshgate inject` alone), the defaults, which match deploy/k8s, with the
 * trust bundle from ./certs.
 */
export async function loadInjector(configFile: string | undefined): Promise<LoadedInjector> {
  const config = configFile ? await loadConfigFile(configFile, injectorConfigSchema) : deepFreeze(injectorConfigSchema.parse(DEFAULT_INJECTOR_CONFIG));
  const base = configFile ? path.dirname(path.resolve(configFile)) : process.cwd();
  const resolve = (file: string): string => path.resolve(base, file);
  const where = configFile ? `${configFile}: mesh.trustBundleFile` : 'meshgate inject (no --config)';
  let pem: string;
  try {
    pem = await readFile(resolve(config.mesh.trustBundleFile), 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const hint = configFile ? '' : '; run `meshgate certs init` first, or pass --config';
    throw new ConfigError(`${where}: cannot read ${config.mesh.trustBundleFile} (${code === 'ENOENT' ? 'no such file' : (code ?? String(err))})${hint}`);
  }
  const certificates = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (certificates.length === 0) throw new ConfigError(`${where}: ${config.mesh.trustBundleFile} holds no PEM certificate`);
  return { config, settings: { config, trustBundlePem: `${certificates.join('\n')}\n` }, resolve };
}
