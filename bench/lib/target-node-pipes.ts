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
      let back: Awaited<ReturnType<typeof startNodeServer>>;
      let front: Awaited<ReturnType<typeof startNodeServer>>;
      try {
        back = await startNodeServer(context.group, 'pipe-back', 'byte-pipe.mjs', ['back', certs, String(context.upstreamPort)], context.startTimeoutMs);
      } catch (err) {
        return { ok: false, reason: (err as Error).message };
      }
      try {
        front = await startNodeServer(context.group, 'pipe-front', 'byte-pipe.mjs', ['front', certs, String(back.port)], context.startTimeoutMs);
      } catch (err) {
        await back.child.stop(1000);
        return { ok: false, reason: (err as Error).message };
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
