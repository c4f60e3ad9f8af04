import { collectProcessMetrics } from '../telemetry/process-metrics.ts';
import { Counter, Gauge, Histogram, Registry } from '../telemetry/prom-client.ts';

export interface CaMetrics {
  readonly registry: Registry;
  /** result: `issued`, or the refusal reason without its `ca.` prefix (e.g. `token_expired`, `rate_limited`). */
  readonly signings: Counter<'result'>;
  readonly signingDuration: Histogram<'result'>;
  readonly signingCertExpiry: Gauge;
}

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** The CA's metrics, on a registry owned by this instance (never prom-client's global one). */
export function createCaMetrics(opts: { defaultMetrics: boolean }): CaMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectProcessMetrics(registry);
  const registers = [registry];
  return {
    registry,
    signings: new Counter({
      name: 'meshgate_ca_signings_total',
      help: 'Sign calls by result: issued, or the refusal reason (token_expired, csr_signature, rate_limited, ...).',
      labelNames: ['result'],
      registers,
    }),
    signingDuration: new Histogram({
      name: 'meshgate_ca_signing_duration_seconds',
      help: 'Time to answer a Sign call, token verification and audit write included.',
      labelNames: ['result'],
      buckets: BUCKETS,
      registers,
    }),
    signingCertExpiry: new Gauge({
      name: 'meshgate_ca_signing_cert_expiry_timestamp_seconds',
      help: 'notAfter of the issuing CA certificate (or its earliest intermediate): leaves stop being issuable then.',
      registers,
    }),
  };
}
