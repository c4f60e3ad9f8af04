import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningCa } from '../../../src/ca/ca-server.ts';
import { CA_ROLE, POLICY_SERVER_ROLE, SIDECAR_ROLE } from '../../../src/cli/roles.ts';
import { UsageError } from '../../../src/cli/usage-error.ts';
import { caConfigSchema } from '../../../src/config/ca-schema.ts';
import { parseConfigText } from '../../../src/config/load.ts';
import { policyServerConfigSchema } from '../../../src/config/policy-server-schema.ts';
import type { SidecarConfig } from '../../../src/config/sidecar-schema.ts';
import { sidecarConfigSchema } from '../../../src/config/sidecar-schema.ts';
import type { RunningSidecar } from '../../../src/sidecar/sidecar.ts';
import type { Logger } from '../../../src/telemetry/logger.ts';
import { meshgateInProcess } from '../../helpers/meshgate-cli.ts';

/* The three long-running roles as the CLI describes them: flags, the service name of their traces, how they stop. */

const SIDECAR_YAML = 'workload: { service: orders, namespace: shop }\ninbound: { app: "http://127.0.0.1:8080" }\nmtls: { mode: DISABLE }\ndrain: { timeout: 7s }\n';
const sidecarConfig = (extra = ''): SidecarConfig => parseConfigText(`${SIDECAR_YAML}${extra}`, 'sidecar.yaml', sidecarConfigSchema);

/** A logger that keeps its info lines. */
function recordingLogger(): { logger: Logger; lines: Array<[object, string]> } {
  const lines: Array<[object, string]> = [];
  return { logger: { info: (obj: object, msg: string) => lines.push([obj, msg]) } as unknown as Logger, lines };
}

describe('meshgate sidecar --workload-host', () => {
  const withHost = (config: SidecarConfig, host: string | undefined) => SIDECAR_ROLE.withFlags!(config, { 'workload-host': host });

  it('makes workload.address HOST:<inbound port>, the address peers dial (IPv6 in brackets)', () => {
    expect(withHost(sidecarConfig(), '10.1.2.3').workload.address).toBe('10.1.2.3:15006');
    expect(withHost(sidecarConfig('listeners: { inbound: { port: 7000 } }\n'), '10.1.2.3').workload.address).toBe('10.1.2.3:7000');
    expect(withHost(sidecarConfig(), 'fd00::a:5').workload.address).toBe('[fd00::a:5]:15006');
    expect(withHost(sidecarConfig(), 'orders-0.orders.shop.svc').workload.address).toBe('orders-0.orders.shop.svc:15006');
  });

  it('keeps the rest of the config and leaves it frozen', () => {
    const config = sidecarConfig();
    const changed = withHost(config, '10.1.2.3');
    expect(changed).toEqual({ ...config, workload: { ...config.workload, address: '10.1.2.3:15006' } });
    expect(Object.isFrozen(changed) && Object.isFrozen(changed.workload)).toBe(true);
    expect(withHost(config, undefined)).toBe(config);
  });

  it.each(['10.1.2.3:8080/x', 'a b', 'http://pod', ''])('refuses %j with one line naming the flag', (host) => {
    expect(() => withHost(sidecarConfig(), host)).toThrow(new UsageError(`meshgate sidecar: --workload-host: expected a host name or IP address, got "${host}"`));
  });

  it('refuses an inbound listener on port 0: the address would tell peers to dial port 0', () => {
    expect(() => withHost(sidecarConfig('listeners: { inbound: { port: 0 } }\n'), '10.1.2.3')).toThrow(
      new UsageError('meshgate sidecar: --workload-host needs a fixed listeners.inbound.port (peers dial HOST:PORT; 0 is not known before the listener binds)'),
    );
  });

  describe('from the command line', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'meshgate-roles-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('a bad host exits 2 with one line before the sidecar starts', async () => {
      const file = join(dir, 'sidecar.yaml');
      await writeFile(file, SIDECAR_YAML);
      expect(await meshgateInProcess(['sidecar', '--config', file, '--workload-host', 'a/b'])).toEqual({
        code: 2,
        stdout: '',
        stderr: 'meshgate sidecar: --workload-host: expected a host name or IP address, got "a/b"\n',
      });
    });
  });
});

describe('the roles', () => {
  it('read their files with their own schemas', async () => {
    expect(await SIDECAR_ROLE.schema()).toBe(sidecarConfigSchema);
    expect(await CA_ROLE.schema()).toBe(caConfigSchema);
    expect(await POLICY_SERVER_ROLE.schema()).toBe(policyServerConfigSchema);
    expect([SIDECAR_ROLE.name, CA_ROLE.name, POLICY_SERVER_ROLE.name]).toEqual(['sidecar', 'ca', 'policy-server']);
  });

  it('name their traces: the sidecar by its workload, the control plane by its role', () => {
    expect(SIDECAR_ROLE.tracing(sidecarConfig())).toEqual({
      serviceName: 'orders.shop',
      resource: { 'service.namespace': 'shop', 'meshgate.role': 'sidecar', 'meshgate.workload': 'orders' },
    });
    expect(CA_ROLE.tracing(undefined as never)).toEqual({ serviceName: 'meshgate-ca', resource: { 'service.namespace': 'meshgate-system', 'meshgate.role': 'ca' } });
    expect(POLICY_SERVER_ROLE.tracing(undefined as never)).toEqual({
      serviceName: 'meshgate-policy-server',
      resource: { 'service.namespace': 'meshgate-system', 'meshgate.role': 'policy-server' },
    });
  });

  it('the sidecar stops by draining: "draining" with its timeout, then "drained" once the drain finished', async () => {
    const { logger, lines } = recordingLogger();
    let finishDrain!: (result: { completed: boolean }) => void;
    const sidecar = { drain: () => new Promise<{ completed: boolean }>((resolve) => (finishDrain = resolve)) } as unknown as RunningSidecar;
    const stopped = SIDECAR_ROLE.stop(sidecar, { signal: 'SIGTERM', logger, config: sidecarConfig() });
    expect(lines).toEqual([[{ signal: 'SIGTERM', timeoutMs: 7_000 }, 'draining']]);
    finishDrain({ completed: false });
    await stopped;
    expect(lines).toEqual([
      [{ signal: 'SIGTERM', timeoutMs: 7_000 }, 'draining'],
      [{ completed: false }, 'drained'],
    ]);
  });

  it('the CA and the policy server stop by closing, after saying so', async () => {
    for (const role of [CA_ROLE, POLICY_SERVER_ROLE]) {
      const { logger, lines } = recordingLogger();
      const events: string[] = [];
      const running = { close: async () => void events.push(`closed after ${lines.length} line`) } as unknown as RunningCa;
      await role.stop(running as never, { signal: 'SIGINT', logger, config: undefined as never });
      expect({ role: role.name, lines, events }).toEqual({ role: role.name, lines: [[{ signal: 'SIGINT' }, 'stopping']], events: ['closed after 1 line'] });
    }
  });
});
