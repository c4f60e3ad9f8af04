import { SIDECAR_ROLE } from '../../src/cli/roles.ts';
import { parseConfigText } from '../../src/config/load.ts';
import type { SidecarConfigInput } from '../../src/config/sidecar-schema.ts';
import { sidecarConfigSchema } from '../../src/config/sidecar-schema.ts';
import type { Clock } from '../../src/core/clock.ts';
import { systemClock } from '../../src/core/clock.ts';
import type { RunningSidecar } from '../../src/sidecar/sidecar.ts';
import { startSidecar } from '../../src/sidecar/sidecar.ts';
import { startTracing } from '../../src/telemetry/tracing.ts';
import { captureLogs } from './log-capture.ts';

export interface TestSidecar extends RunningSidecar {
  /** Log lines written so far, parsed. */
  readonly logs: Array<Record<string, unknown>>;
  readonly outboundUrl: string;
  readonly inboundUrl: string;
  readonly adminUrl: string;
}

/**
 * Starts a sidecar in this process on free loopback ports. `overrides` is the
 * YAML document as an object; listeners default to port 0 on 127.0.0.1.
 */
export async function startTestSidecar(overrides: Partial<SidecarConfigInput> & Pick<SidecarConfigInput, 'inbound'>, deps: { clock?: Clock; random?: () => number } = {}): Promise<TestSidecar> {
  const input: SidecarConfigInput = {
    workload: { service: 'test', namespace: 'default' },
    listeners: {
      outbound: { address: '127.0.0.1', port: 0 },
      inbound: { address: '127.0.0.1', port: 0 },
      admin: { address: '127.0.0.1', port: 0 },
    },
    log: { level: 'info', accessLog: true },
    // Plaintext unless a test brings identity: most tests exercise the HTTP data path.
    mtls: { mode: 'DISABLE' },
    ...overrides,
  };
  const config = parseConfigText(JSON.stringify(input), 'test-sidecar.yaml', sidecarConfigSchema);
  const { logger, lines: logs } = captureLogs({ level: config.log.level, name: 'sidecar' });
  // As the CLI does, without the OTEL_* environment: off unless the test's config turns it on.
  const tracing = await startTracing(config.telemetry.tracing, {}, { logger, ...SIDECAR_ROLE.tracing(config) });
  const running = await startSidecar(config, { logger, clock: deps.clock ?? systemClock, random: deps.random ?? Math.random, tracing });
  return {
    ...running,
    async drain(timeoutMs) {
      const drained = await running.drain(timeoutMs);
      await tracing.shutdown(); // the last calls' spans leave before the test looks for them
      return drained;
    },
    logs,
    outboundUrl: `http://127.0.0.1:${running.outbound.port}`,
    inboundUrl: `http://127.0.0.1:${running.inbound.port}`,
    adminUrl: `http://127.0.0.1:${running.admin.port}`,
  };
}
