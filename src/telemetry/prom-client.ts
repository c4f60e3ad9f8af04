/*
 * prom-client's classes, each from its own file. The package's index also
 * loads its Pushgateway, which requires node:https (and with it node:tls) and
 * node:zlib, which a plaintext sidecar does not use: with node:tls taken on
 * first use (src/proxy/upstream-pool.ts), 2.8 MiB of its RSS (bench/README.md,
 * "Cost per pod"). Types still come from the package
 * (prom-client-parts.d.ts). A prom-client release that moves these files
 * fails at import in every test, not silently.
 */
import AggregatorRegistry from 'prom-client/lib/cluster.js';
import Counter from 'prom-client/lib/counter.js';
import collectDefaultMetrics from 'prom-client/lib/defaultMetrics.js';
import Gauge from 'prom-client/lib/gauge.js';
import Histogram from 'prom-client/lib/histogram.js';
import Registry from 'prom-client/lib/registry.js';

export { AggregatorRegistry, Counter, collectDefaultMetrics, Gauge, Histogram, Registry };
