import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEndpoint, type UpstreamEndpoint } from '../../../src/outbound/endpoint.ts';
import { createHealthChecker, createHttpProbe, type HealthCheckOptions } from '../../../src/outbound/health-checker.ts';

const opts: HealthCheckOptions = { path: '/healthz', intervalMs: 5_000, timeoutMs: 1_000, unhealthyThreshold: 2, healthyThreshold: 3 };

/**
 * Runs the checker for exactly `rounds` probe rounds: the fake sleep resolves at
 * once and aborts after the last round. Returns ep.healthy after each round.
 */
async function runRounds(results: readonly (boolean | Error)[], ep: UpstreamEndpoint = createEndpoint('10.0.0.1:80')): Promise<{ history: boolean[]; paths: string[]; sleeps: number[] }> {
  const history: boolean[] = [];
  const paths: string[] = [];
  const sleeps: number[] = [];
  const ac = new AbortController();
  let round = 0;
  const checker = createHealthChecker(
    opts,
    async (_ep, path, signal) => {
      expect(signal.aborted).toBe(false);
      paths.push(path);
      const r = results[round++]!;
      if (r instanceof Error) throw r;
      return r;
    },
    [ep],
    {
      sleep: async (ms) => {
        history.push(ep.healthy);
        sleeps.push(ms);
        if (round >= results.length) ac.abort();
      },
    },
  );
  await checker.run(ac.signal);
  return { history, paths, sleeps };
}

describe('health checker', () => {
  it.each([
    { name: 'one failure keeps it up', results: [true, false, true], expected: [true, true, true] },
    { name: 'unhealthyThreshold failures take it down', results: [false, false], expected: [true, false] },
    { name: 'a thrown probe counts as a failure', results: [new Error('boom'), false], expected: [true, false] },
    {
      name: 'healthyThreshold passes bring it back',
      results: [false, false, true, true, true],
      expected: [true, false, false, false, true],
    },
    {
      name: 'a failure restarts the pass streak',
      results: [false, false, true, true, false, true, true],
      expected: [true, false, false, false, false, false, false],
    },
  ])('$name', async ({ results, expected }) => {
    const { history, paths, sleeps } = await runRounds(results);
    expect(history).toEqual(expected);
    expect(new Set(paths)).toEqual(new Set(['/healthz']));
    expect(new Set(sleeps)).toEqual(new Set([5_000]));
  });

  it('returns at once when already aborted', async () => {
    let probes = 0;
    const checker = createHealthChecker(opts, async () => (probes++, true), [createEndpoint('a:1')], {});
    await checker.run(AbortSignal.abort());
    expect(probes).toBe(0);
  });

  it('stops on abort during a real sleep', async () => {
    const ac = new AbortController();
    let probes = 0;
    // setImmediate fires after the round, while the loop waits in the default 5 s sleep.
    const checker = createHealthChecker(opts, async () => {
      probes++;
      setImmediate(() => ac.abort());
      return true;
    }, [createEndpoint('a:1')]);
    await expect(checker.run(ac.signal)).resolves.toBeUndefined();
    expect(probes).toBe(1);
  });
});

describe('http probe', () => {
  let server: Server;
  let port: number;

  beforeAll(async () => {
    server = createServer((req, res) => {
      res.statusCode = req.url === '/ok' ? 200 : 500;
      res.end('body');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it.each([
    { name: '200 passes', path: '/ok', expected: true },
    { name: '500 fails', path: '/fail', expected: false },
  ])('$name', async ({ path, expected }) => {
    const probe = createHttpProbe();
    expect(await probe(createEndpoint(`127.0.0.1:${port}`), path, AbortSignal.timeout(2_000))).toBe(expected);
  });

  it('a closed port fails', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const probe = createHttpProbe();
    expect(await probe(createEndpoint(`127.0.0.1:${closedPort}`), '/ok', AbortSignal.timeout(2_000))).toBe(false);
  });
});
