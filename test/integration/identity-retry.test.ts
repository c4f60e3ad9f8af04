import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.ts';
import type { SidecarConfigInput } from '../../src/config/sidecar-schema.ts';
import { sidecarConfigSchema } from '../../src/config/sidecar-schema.ts';
import { systemClock } from '../../src/core/clock.ts';
import { startWorkloadIdentity } from '../../src/sidecar/workload-identity.ts';
import type { TestCa } from '../helpers/ca-fixture.ts';
import { createCaMaterialDir, startTestCa } from '../helpers/ca-fixture.ts';
import { deferAfterEach } from '../helpers/cleanup.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import { startTcpGate } from '../helpers/tcp-gate.ts';
import { eventually } from './policy-server-harness.ts';

/*
 * A sidecar whose CA is away backs off (identity.retry), but gets its
 * certificate promptly once the CA answers again: the probe notices, the
 * backoff is cut short. Real CA, real gRPC over TLS, real TCP.
 */

const defer = deferAfterEach();

async function caOn(dir: string, port: number): Promise<TestCa> {
  const ca = await startTestCa({ dir, overrides: { listen: { address: '127.0.0.1', port } } });
  defer(() => ca.close());
  return ca;
}

/** The sidecar's identity loop, from a parsed sidecar config, with its log lines captured. */
function identityOf(caAddress: string, dir: string, tokenFile: string, retry: Record<string, string>) {
  const input = {
    workload: { service: 'orders', namespace: 'shop' },
    inbound: { app: 'http://127.0.0.1:1' },
    identity: { ca: { address: caAddress, trustBundleFile: path.join(dir, 'trust-bundle.pem'), serverName: 'localhost' }, tokenFile, retry },
  } as SidecarConfigInput;
  const config = parseConfigText(JSON.stringify(input), 'sidecar.yaml', sidecarConfigSchema);
  const { logger, lines: logs } = captureLogs({ name: 'sidecar' });
  const lifetime = new AbortController();
  defer(() => lifetime.abort());
  const identity = startWorkloadIdentity(config.identity!, config.workload, {
    clock: systemClock,
    // The top of every jitter range: the backoff is as long as the config allows.
    random: () => 0.99,
    logger,
    signal: lifetime.signal,
    handshakeTimeoutMs: 5_000,
  });
  identity.catch(() => {});
  return { identity, logs, failures: () => logs.filter((l) => String(l.msg).startsWith('certificate signing failed')) };
}

describe('identity retry while the CA is away', () => {
  it('a sidecar started while the CA is down gets its certificate within a second of the CA returning, not after its backoff', async () => {
    const dir = await createCaMaterialDir();
    // Learn a port and mint a token, then take the CA down.
    const first = await startTestCa({ dir });
    const port = first.ca.grpcPort;
    const tokenFile = path.join(dir, 'orders.token');
    await writeFile(tokenFile, await first.token('shop', 'orders'));
    await first.close();

    const sidecar = identityOf(`127.0.0.1:${port}`, dir, tokenFile, { base: '5s', max: '30s', probeInterval: '100ms' });
    await eventually(() => sidecar.failures().length > 0, 5_000, 'a failed signing');
    const backoff = sidecar.failures()[0]!.retryInMs as number;
    expect(backoff).toBeGreaterThan(10_000); // 5 s + 0.99 x 10 s: what the caller would wait without the probe

    const returned = performance.now();
    await caOn(dir, port);
    const identity = await sidecar.identity;
    const waited = performance.now() - returned;
    console.log(`identity retry: certificate ${waited.toFixed(0)} ms after the CA returned (backoff was ${backoff} ms)`);
    expect(identity.manager.valid()).toBe(true);
    expect(waited).toBeLessThan(1_500);
    expect(sidecar.logs.some((l) => l.msg === 'CA reachable again; retrying now')).toBe(true);
  });

  it('a CA that answers but refuses gets the full backoff, not a retry per probe', async () => {
    const dir = await createCaMaterialDir();
    const ca = await caOn(dir, 0);
    // The sidecar dials the CA through a gate that counts its dials: each probe is one.
    const gate = await startTcpGate(ca.ca.grpcPort);
    defer(() => gate.close());
    const tokenFile = path.join(dir, 'bad.token');
    await writeFile(tokenFile, 'not-a-jwt');
    const sidecar = identityOf(gate.address, dir, tokenFile, { base: '2s', max: '30s', probeInterval: '50ms' });
    await eventually(() => sidecar.failures().length > 0, 5_000, 'a refused signing');
    const failedAt = performance.now();
    const dialsAtFailure = gate.connections();
    // Ten probes later (about 0.5 s, well inside the backoff of 2 s or more): every one found the CA up, none was a reason to retry.
    await eventually(() => gate.connections() - dialsAtFailure >= 10, 5_000, 'ten probes of the CA');
    expect(performance.now() - failedAt).toBeLessThan(sidecar.failures()[0]!.retryInMs as number);
    expect(sidecar.failures()).toHaveLength(1);
    expect(sidecar.failures()[0]!.err).toMatch(/UNAUTHENTICATED|token/i);
  });

  it('refuses a retry.max below retry.base, naming the field', () => {
    const input = {
      workload: { service: 'orders' },
      inbound: { app: 'http://127.0.0.1:1' },
      identity: { ca: { address: '127.0.0.1:1', trustBundleFile: 'x.pem' }, retry: { base: '10s', max: '1s' } },
    };
    expect(() => parseConfigText(JSON.stringify(input), 'sidecar.yaml', sidecarConfigSchema)).toThrow(/identity\.retry\.max: max must be at least base/);
  });
});
