import { closeTogether, servePairSide } from './pair-side.mjs';

/*
 * Node's floor on the mesh path: one side of a pair of byte pipes, the least
 * a Node.js data plane can do per call. No HTTP parsing, no pooling, no checks:
 * each caller connection gets its own upstream connection and the bytes are
 * piped both ways (node:net and node:tls streams, as any Node proxy uses).
 * Sides, arguments and output: ./pair-side.mjs.
 */
servePairSide('byte-pipe.mjs', (caller, upstream) => {
  caller.pipe(upstream);
  upstream.pipe(caller);
  closeTogether(caller, upstream);
});
