import type { Dispatcher } from 'undici';
import { Agent } from 'undici';
import type { CallContext } from '../core/call-context.ts';
import { pathWithQuery, requestBody } from '../proxy/call.ts';
import type { CallRecording, CallTelemetry } from '../proxy/call-telemetry.ts';
import { propagateTrace, recordCall, replyError } from '../proxy/call-telemetry.ts';
import { forward } from '../proxy/forward.ts';
import { upstreamRequestHeaders } from '../proxy/headers.ts';
import type { DownstreamRequest, DownstreamResponse } from '../proxy/listener.ts';
import { originalDestinationOf } from './original-dst.ts';
import type { InterceptionReporter } from './reporter.ts';

/*
 * HTTP to a host the registry does not know, on a captured connection: the
 * app dialled somewhere real (an external API, a service outside the mesh),
 * so under ALLOW_ANY (Istio's default: injecting the sidecar must not break
 * such calls) the call goes there, plaintext HTTP/1.1 as the app sent it,
 * with the usual header hygiene and trace context. Under REGISTRY_ONLY, or
 * on a connection that was not captured (no original destination to go to),
 * the stack answers 404 route.not_found as without interception.
 */

export interface HttpPassthroughOptions {
  readonly policy: 'ALLOW_ANY' | 'REGISTRY_ONLY';
  readonly report: InterceptionReporter;
  readonly telemetry: CallTelemetry;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** Time the destination has to send its response head. */
  readonly responseTimeoutMs: number;
}

export interface HttpPassthrough {
  /** Takes the call and answers it, or returns false for route.not_found. */
  handle(req: DownstreamRequest, res: DownstreamResponse, call: CallContext, recording: CallRecording): boolean;
  close(): Promise<void>;
}

export function createHttpPassthrough(opts: HttpPassthroughOptions): HttpPassthrough {
  // One agent: it keeps a connection pool per origin and closes idle ones, so destinations the app picks do not pile up.
  const agent = new Agent({ connect: { timeout: opts.connectTimeoutMs }, keepAliveTimeout: Math.min(opts.idleTimeoutMs, 30_000), connections: 64 });
  return {
    handle(req, res, call, recording) {
      const dst = originalDestinationOf(req.socket);
      if (!dst) return false;
      if (opts.policy === 'REGISTRY_ONLY') {
        opts.report.refused('outbound', 'registry_only', dst, 'HTTP to a host outside the registry');
        return false;
      }
      opts.report.passthrough('unregistered_host', dst);
      const host = dst.address.includes(':') ? `[${dst.address}]` : dst.address;
      const origin = `http://${host}:${dst.port}`;
      const dispatcher = agent.compose((dispatch) => (options, handler) => dispatch({ ...options, origin }, handler)) as unknown as Dispatcher;
      const headers = upstreamRequestHeaders(call.headers, { clientAddress: call.source.address, proto: 'http', requestId: call.id, authority: call.authority });
      propagateTrace(opts.telemetry, recording, headers);
      let picked = false;
      forward(
        {
          method: call.method,
          path: pathWithQuery(call),
          headers,
          body: requestBody(req),
          timeoutMs: opts.responseTimeoutMs,
          bodyTimeoutMs: call.isGrpc ? 0 : opts.idleTimeoutMs,
          retry: undefined, // not ours to retry: the app called it directly
          pick: () => (picked ? undefined : ((picked = true), { dispatcher, label: `${host}:${dst.port}`, done: () => {} })),
        },
        res,
        replyError(call, res),
      ).then((outcome) => {
        call.annotations.upstream = outcome.upstream;
        recordCall(opts.telemetry, call, outcome, recording);
      });
      return true;
    },
    close: () => agent.close(),
  };
}
