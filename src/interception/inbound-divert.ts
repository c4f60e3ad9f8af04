import type { ConnectionDivert } from '../proxy/listener.ts';
import type { OriginalDstReader } from './original-dst.ts';
import { tagOriginalDestination } from './original-dst.ts';
import type { InterceptionReporter } from './reporter.ts';

/*
 * The inbound listener's first look at a captured connection. Peer sidecars
 * dial pod-ip:app-port with mTLS and the rules send it here: the original
 * port says which app port the call is for (kept on the socket, read by the
 * inbound stack). A captured connection to a port the app does not serve is
 * closed and counted: the rules capture every port so that none is reachable
 * around the sidecar. A connection that was not redirected (a caller that
 * dialled :15006 itself) goes on as without interception, to inbound.app.
 */

export function createInboundDivert(opts: { reader: OriginalDstReader; appPorts: readonly number[]; report: InterceptionReporter }): ConnectionDivert {
  const appPorts = new Set(opts.appPorts);
  return (socket, serve) => {
    const dst = opts.reader.read(socket);
    if (dst && !appPorts.has(dst.port)) {
      opts.report.refused('inbound', 'not_app_port', dst, `port ${dst.port} is not in interception.appPorts`);
      socket.destroy();
      return;
    }
    if (dst) tagOriginalDestination(socket, dst);
    serve(socket);
  };
}
