import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../helpers/servers.ts';
import { startHttpServer } from '../helpers/servers.ts';
import type { SidecarProcess } from '../helpers/sidecar-process.ts';
import { plaintextSidecarConfig, startSidecarProcess } from '../helpers/sidecar-process.ts';

/*
 * A quiet sidecar gives its heap back to the OS (src/core/heap-release.ts), which
 * blocks it once for a full collection; `memory.releaseWhenQuiet: false` is how a
 * team that would rather keep the memory than take that pause turns it off.
 */

/** Resolves with the first log line carrying `msg`, looking at the lines so far and then at each new chunk of stdout. */
function logLine(sidecar: SidecarProcess, msg: string, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const look = (): boolean => {
      const line = sidecar.logs.find((entry) => entry.msg === msg);
      if (line) resolve(line);
      return line !== undefined;
    };
    if (look()) return;
    const onData = (): void => {
      // The helper parses the chunk in its own listener, registered first.
      if (look()) sidecar.child.stdout!.off('data', onData);
    };
    sidecar.child.stdout!.on('data', onData);
    setTimeout(() => reject(new Error(`no '${msg}' line within ${timeoutMs} ms`)), timeoutMs).unref();
  });
}

describe('a quiet sidecar releases its heap', () => {
  let dir: string;
  let app: TestServer;
  let releasing: SidecarProcess;
  let keeping: SidecarProcess;

  const config = (memory: Record<string, unknown>): Record<string, unknown> => plaintextSidecarConfig(app.url, { log: { level: 'debug', accessLog: false }, memory });

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-heap-'));
    app = await startHttpServer((_req, res) => res.end('ok'));
    [releasing, keeping] = await Promise.all([startSidecarProcess(config({}), dir), startSidecarProcess(config({ releaseWhenQuiet: false }), dir)]);
  });

  afterAll(async () => {
    releasing?.child.kill('SIGKILL');
    keeping?.child.kill('SIGKILL');
    await app?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('by default once it is quiet after start, and not at all with memory.releaseWhenQuiet: false', async () => {
    const started = performance.now();
    const released = await logLine(releasing, 'heap released', 15_000);
    expect(released.blockedMs).toEqual(expect.any(Number));
    expect(released.heapBytesAfter as number).toBeLessThan(released.heapBytesBefore as number);
    // The other sidecar has been as quiet for as long, and a second more: absence has no event to await.
    await delay(performance.now() - started + 1_000);
    expect(keeping.logs.some((entry) => entry.msg === 'heap released')).toBe(false);
    expect((await fetch(`${keeping.adminUrl}/ready`)).status).toBe(200);
  });
});
