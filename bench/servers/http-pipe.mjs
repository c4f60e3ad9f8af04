import { closeTogether, servePairSide } from './pair-side.mjs';

/*
 * Node's floor on the mesh path for a proxy that reads HTTP: one side of a
 * pair of minimal HTTP/1.1 relays. Like byte-pipe.mjs (one upstream connection
 * per caller connection, node:net and node:tls sockets), but each request and
 * each response is parsed (request or status line, every field line, the
 * Content-Length framing) and written again from what was parsed, head and
 * body in one write: the work any proxy that routes, checks or logs calls
 * does at the least, and nothing more. No checks, no routing, no pooling, no
 * timeouts, no telemetry, no chunked bodies (the bench's request and the echo
 * app's answer both carry a Content-Length): not a proxy anyone would deploy.
 * Sides, arguments and output: ./pair-side.mjs.
 */

/** A head over this is refused (the connection closed): bounded like any proxy's. */
const MAX_HEAD = 64 * 1024;

/**
 * Reads HTTP/1.1 messages from `from` and writes each, re-serialised, to `to`:
 * the start line and the field lines parsed into names and values, then
 * written again with the body that came with them.
 * @param {import('node:net').Socket} from @param {import('node:net').Socket} to
 */
function relayMessages(from, to) {
  /** @type {Buffer | undefined} */
  let pending;
  let bodyLeft = 0;
  from.on('data', (chunk) => {
    let data = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = undefined;
    while (data.length > 0) {
      if (bodyLeft > 0) {
        const part = data.length <= bodyLeft ? data : data.subarray(0, bodyLeft);
        bodyLeft -= part.length;
        to.write(part);
        data = data.subarray(part.length);
        continue;
      }
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) {
        if (data.length > MAX_HEAD) return fail();
        pending = data;
        return;
      }
      const lines = data.toString('latin1', 0, end).split('\r\n');
      let head = `${lines[0]}\r\n`;
      let length = 0;
      for (let i = 1; i < lines.length; i++) {
        const line = lines[i];
        const colon = line.indexOf(':');
        if (colon <= 0) return fail();
        const name = line.slice(0, colon);
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === 'content-length') length = Number(value);
        head += `${name}: ${value}\r\n`;
      }
      if (!Number.isSafeInteger(length) || length < 0) return fail();
      const bodyAt = end + 4;
      const inHand = Math.min(length, data.length - bodyAt);
      // Head and the body bytes that came with it leave in one write.
      to.cork();
      to.write(`${head}\r\n`, 'latin1');
      if (inHand > 0) to.write(data.subarray(bodyAt, bodyAt + inHand));
      process.nextTick(() => to.uncork());
      bodyLeft = length - inHand;
      data = data.subarray(bodyAt + inHand);
    }
  });
  const fail = () => {
    from.destroy();
    to.destroy();
  };
}

servePairSide('http-pipe.mjs', (caller, upstream) => {
  relayMessages(caller, upstream);
  relayMessages(upstream, caller);
  closeTogether(caller, upstream);
});
