import { startNodeServer } from './node-server.ts';
import type { OnRowStarted } from './row-processes.ts';
import type { StartedTarget, Target, TargetContext } from './target.ts';
import { pairCertificates } from './target-nginx-mtls.ts';

/*
 * Node's floors on the mesh path, next to the nginx pair: two relays chained
 * over mutual TLS 1.3 with the same certificates.
 *  - node-pipe-pair: byte pipes (servers/byte-pipe.mjs), what node:net and
 *    node:tls cost a Node data plane before it parses a byte of HTTP;
 *  - node-http-pair: minimal HTTP/1.1 relays (servers/http-pipe.mjs), which
 *    also parse each request and response and write them again: the least
 *    a Node proxy that reads calls (to route, check or log them) pays.
 * Neither is a proxy anyone would deploy: nothing is checked, routed or logged.
 * bench:pair also runs either as one plaintext hop (side `plain`), next to
 * one nginx: Node's floor for the one-hop row.
 */
export function createNodePipePairTarget(onStarted: OnRowStarted): Target {
  return pairTarget('node-pipe-pair', 'two Node byte pipes over mTLS (floor)', 'byte-pipe.mjs', 'pipe', onStarted);
}

export function createNodeHttpPairTarget(onStarted: OnRowStarted): Target {
  return pairTarget('node-http-pair', 'two minimal Node HTTP/1.1 relays over mTLS (floor with HTTP)', 'http-pipe.mjs', 'relay', onStarted);
}

/** Node's floor for the one hop: one relay, plaintext both ways, between the load and the app. */
export function createNodeOneHopTarget(relay: NodeRelay, onStarted: OnRowStarted): Target {
  const script = RELAY_SCRIPTS[relay];
  const name = `node-${relay}`;
  return {
    id: `${name}-one-hop`,
    label: `one Node ${relay === 'pipe' ? 'byte pipe' : 'minimal HTTP/1.1 relay'}, plaintext (floor)`,
    start: async (context: TargetContext) => {
      const relayed = await startNodeServer(context.group, name, script, ['plain', '-', String(context.upstreamPort)], context.startTimeoutMs).catch((err: Error) => err);
      if (relayed instanceof Error) return { ok: false, reason: relayed.message };
      await onStarted([{ name, pgid: relayed.child.process.pid!, role: 'proxy' }]);
      const started: StartedTarget = { url: `http://127.0.0.1:${relayed.port}/`, headers: {}, stop: () => relayed.child.stop() };
      return { ok: true, started };
    },
  };
}

/** Node's two floors: bytes piped, or each message parsed and written again. */
export const NODE_RELAYS = ['pipe', 'http'] as const;
export type NodeRelay = (typeof NODE_RELAYS)[number];
const RELAY_SCRIPTS: Readonly<Record<NodeRelay, string>> = { pipe: 'byte-pipe.mjs', http: 'http-pipe.mjs' };

function pairTarget(id: string, label: string, script: string, name: string, onStarted: OnRowStarted): Target {
  return {
    id,
    label,
    start: async (context: TargetContext) => {
      const certs = pairCertificates(context, `meshgate-bench-${id}-`);
      if (typeof certs !== 'string') return certs;
      // startNodeServer throws (and stops its own child) when a relay does not come up: the row is skipped with why.
      const start = (side: 'front' | 'back', targetPort: number) =>
        startNodeServer(context.group, `${name}-${side}`, script, [side, certs, String(targetPort)], context.startTimeoutMs).catch((err: Error) => err);
      const back = await start('back', context.upstreamPort);
      if (back instanceof Error) return { ok: false, reason: back.message };
      const front = await start('front', back.port);
      if (front instanceof Error) {
        await back.child.stop(1000);
        return { ok: false, reason: front.message };
      }
      await onStarted([
        { name: `${name}-front`, pgid: front.child.process.pid!, role: 'proxy' },
        { name: `${name}-back`, pgid: back.child.process.pid!, role: 'proxy' },
      ]);
      const stop = async (): Promise<void> => {
        await Promise.all([front.child.stop(), back.child.stop()]);
      };
      const started: StartedTarget = { url: `http://127.0.0.1:${front.port}/`, headers: {}, stop };
      return { ok: true, started };
    },
  };
}
