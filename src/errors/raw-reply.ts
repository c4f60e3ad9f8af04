import type { Socket } from 'node:net';
import { nodeHttp as http } from '../core/node-builtins.ts';
import type { ReasonCode } from '../core/reason-codes.ts';
import { reasonCode } from '../core/reason-codes.ts';

/**
 * sendVerdict's sibling for a socket no response object owns (a head the
 * parser refused, one that did not arrive in time): the same `{code, reason}`
 * JSON and x-meshgate-reason, the status from the reason-code table, written
 * as raw HTTP/1.1, and the connection closed: after such an error the byte
 * stream cannot be trusted. Returns false when no reply was possible.
 */
export function replyRaw(socket: Socket, code: ReasonCode<'data'>, reason: string, lingerMs: number): boolean {
  // Callers check that no response of this connection started (a raw reply would corrupt it).
  if (!socket.writable) {
    socket.destroy();
    return false;
  }
  const status = reasonCode(code).http;
  const body = JSON.stringify({ code, reason });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `x-meshgate-reason: ${code}\r\nconnection: close\r\n\r\n${body}`,
  );
  // Closed once the peer read the reply and hung up, or after `lingerMs` if it never does.
  const linger = setTimeout(() => socket.destroy(), lingerMs);
  socket.once('close', () => clearTimeout(linger));
  return true;
}
