import type { Clock } from '../core/clock.ts';

/*
 * Whether the local app speaks HTTP/2 with prior knowledge (h2c). With
 * `inbound.appProtocol: auto` the sidecar mirrors the caller's protocol, so an
 * h2c caller (another sidecar relaying an h2c app, or a direct client) would
 * reach an HTTP/1.1-only app with h2c and fail with 502. Instead the first such
 * call asks the app once, with a real h2c connection preface; the answer is
 * kept for `ttlMs` (an app may be redeployed with another server).
 *
 * Written here because the question is one connection attempt: node:http2
 * answers it, and no library wraps it.
 */

export interface AppH2cProbe {
  /** The cached answer, or a promise of it while the (single) probe runs. */
  speaksH2c(): boolean | Promise<boolean>;
}

export function createAppH2cProbe(appUrl: string, opts: { readonly clock: Clock; readonly timeoutMs?: number; readonly ttlMs?: number }): AppH2cProbe {
  const timeoutMs = opts.timeoutMs ?? 1_000;
  const ttlMs = opts.ttlMs ?? 60_000;
  let known: { readonly h2c: boolean; readonly at: number } | undefined;
  let pending: Promise<boolean> | undefined;

  const probe = (): Promise<boolean> =>
    new Promise<boolean>((resolve) => {
      // Loaded here, on the first question: a sidecar whose callers never speak HTTP/2 never loads node:http2.
      const session = process.getBuiltinModule('node:http2').connect(appUrl);
      let settled = false;
      const done = (h2c: boolean): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        session.destroy();
        known = { h2c, at: opts.clock.monotonic() };
        pending = undefined;
        resolve(h2c);
      };
      // Only an HTTP/2 server answers the preface with SETTINGS ('connect' fires on the TCP connect alone).
      session.once('remoteSettings', () => done(true));
      // An HTTP/1.1 server answers the preface with 400 and closes: a protocol error here.
      session.once('error', () => done(false));
      session.once('close', () => done(false));
      const timer = setTimeout(() => done(false), timeoutMs);
    });

  return {
    speaksH2c() {
      if (known && opts.clock.monotonic() - known.at < ttlMs) return known.h2c;
      return (pending ??= probe());
    },
  };
}
