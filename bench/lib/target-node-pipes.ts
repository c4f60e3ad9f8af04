import { startNodeServer } from './node-server.ts';
import type { OnRowStarted } from './row-processes.ts';
import type { StartedTarget, Target, TargetContext } from './target.ts';
import { pairCertificates } from './target-nginx-mtls.ts';

/*
 * Node's floor on the mesh path, next to the nginx pair: two byte pipes
 * (servers/byte-pipe.mjs) chained over mutual TLS 1.3 with the same
 * certificates, so the row shows what node:net and node:tls cost a Node data
 * plane before it parses a byte of HTTP. Not a proxy anyone would deploy: it
 * forwards without reading, so it has nothing to check or route.
 */
export function createNodePipePairTarget(onStarted: OnRowStarted): Target {
  return {
    id: 'node-pipe-pair',
    label: 'two Node byte pipes over mTLS (floor)',
    start: async (context: TargetContext) => {
      const certs = pairCertificates(context, 'meshgate-bench-node-pipes-');
      if (typeof certs !== 'string') return certs;
      // startNodeServer throws (and stops its own child) when a pipe does not come up: the row is skipped with why.
      const start = (side: 'front' | 'back', targetPort: number) =>
        startNodeServer(context.group, `pipe-${side}`, 'byte-pipe.mjs', [side, certs, String(targetPort)], context.startTimeoutMs).catch((err: Error) => err);
      const back = await start('back', context.upstreamPort);
      if (back instanceof Error) return { ok: false, reason: back.message };
      const front = await start('front', back.port);
      if (front instanceof Error) {
        await back.child.stop(1000);
        return { ok: false, reason: front.message };
      }
      await onStarted([
        { name: 'pipe-front', pgid: front.child.process.pid!, role: 'proxy' },
        { name: 'pipe-back', pgid: back.child.process.pid!, role: 'proxy' },
      ]);
      const stop = async (): Promise<void> => {
        await Promise.all([front.child.stop(), back.child.stop()]);
      };
      const started: StartedTarget = { url: `http://127.0.0.1:${front.port}/`, headers: {}, stop };
      return { ok: true, started };
    },
  };
}
