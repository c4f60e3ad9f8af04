import { ConfigError } from '../config/load.ts';
import type { SidecarConfig } from '../config/sidecar-schema.ts';
import type { Clock } from '../core/clock.ts';
import { createInboundDivert } from '../interception/inbound-divert.ts';
import { InterceptionUnavailableError, loadOriginalDstReader, originalDestinationOf } from '../interception/original-dst.ts';
import { createOutboundDivert } from '../interception/outbound-divert.ts';
import { createInterceptionReporter } from '../interception/reporter.ts';
import type { OutboundStackDeps } from '../outbound/outbound-stack.ts';
import type { CallTelemetry } from '../proxy/call-telemetry.ts';
import type { ConnectionDivert, DownstreamRequest } from '../proxy/listener.ts';
import type { UpstreamPool } from '../proxy/upstream-pool.ts';
import { createUpstreamPool } from '../proxy/upstream-pool.ts';
import type { Logger } from '../telemetry/logger.ts';

/*
 * The sidecar's side of transparent interception (config `interception`):
 * the two listeners' diverts, one app connection pool per app port, and the
 * HTTP passthrough of the outbound stack. The pod's rules are `meshgate
 * iptables`' (src/interception/iptables-rules.ts).
 */

export interface SidecarInterception {
  readonly inbound: ConnectionDivert;
  readonly outbound: ConnectionDivert;
  /** The app pool of the port a captured inbound call was for. */
  appFor(req: DownstreamRequest): UpstreamPool | undefined;
  readonly unregistered: NonNullable<OutboundStackDeps['unregistered']>;
  describe(): unknown;
  close(): Promise<void>;
}

export interface InterceptionDeps {
  readonly telemetry: CallTelemetry;
  readonly logger: Logger;
  readonly clock: Clock;
  /** The pool of inbound.app, reused for its port. */
  readonly app: UpstreamPool;
  /** The sidecar's one buffer upstream sockets read into (src/proxy/socket-reads.ts), for the other app ports' pools. */
  readonly readBuffer: Buffer;
  /** Ports the sidecar listens on (read per captured connection: they are known only once bound). */
  readonly ownPorts: () => readonly number[];
  readonly configFile?: string;
}

export async function startInterception(config: SidecarConfig, deps: InterceptionDeps): Promise<SidecarInterception | undefined> {
  const section = config.interception;
  if (!section) return undefined;
  // Here, not at the top: the passthrough's undici Agent is for captured calls only.
  const { createHttpPassthrough } = await import('../interception/http-passthrough.ts');
  let reader;
  try {
    reader = await loadOriginalDstReader();
  } catch (err) {
    if (err instanceof InterceptionUnavailableError) throw new ConfigError(`${deps.configFile ?? 'config'}: interception: ${err.message}`);
    throw err;
  }
  const appUrl = new URL(config.inbound.app);
  const defaultPort = Number(appUrl.port || 80);
  const appPorts = section.appPorts ?? [defaultPort];
  const pools = new Map<number, UpstreamPool>();
  for (const port of appPorts) {
    pools.set(
      port,
      port === defaultPort
        ? deps.app
        : createUpstreamPool(`${appUrl.hostname}:${port}`, {
            connectTimeoutMs: 2_000,
            maxConnections: 256,
            keepAliveTimeoutMs: Math.min(config.limits.idleTimeout, 30_000),
            readBuffer: deps.readBuffer,
          }),
    );
  }
  const report = createInterceptionReporter({ metrics: deps.telemetry.metrics, logger: deps.logger, clock: deps.clock });
  const outbound = createOutboundDivert({
    reader,
    policy: section.outboundTrafficPolicy,
    detectionTimeoutMs: section.protocolDetectionTimeout,
    connectTimeoutMs: 2_000,
    ownPorts: deps.ownPorts,
    report,
  });
  const http = createHttpPassthrough({
    policy: section.outboundTrafficPolicy,
    report,
    telemetry: deps.telemetry,
    connectTimeoutMs: 2_000,
    idleTimeoutMs: config.limits.idleTimeout,
    responseTimeoutMs: config.inbound.timeout, // the sidecar's own answer-time budget; external APIs get the app's
  });
  return {
    inbound: createInboundDivert({ reader, appPorts, report }),
    outbound: outbound.divert,
    appFor: (req) => {
      const dst = originalDestinationOf(req.socket);
      return dst ? pools.get(dst.port) : undefined;
    },
    unregistered: (req, res, call, recording) => http.handle(req, res, call, recording),
    describe: () => ({ appPorts, outboundTrafficPolicy: section.outboundTrafficPolicy, protocolDetectionTimeoutMs: section.protocolDetectionTimeout, tcpRelays: outbound.relays() }),
    async close() {
      outbound.destroy();
      await Promise.all([http.close(), ...[...pools.values()].filter((pool) => pool !== deps.app).map((pool) => pool.close())]);
    },
  };
}
