import { runBackgroundLoop } from '../core/background-loop.ts';
import { sleep } from '../core/backoff.ts';
import type { Clock, Random } from '../core/clock.ts';
import type { Logger } from '../telemetry/logger.ts';
import { createExpiryTimer } from './expiry-timer.ts';
import type { CertificateFacts, KeyType } from './key-material.ts';
import { certificateFacts, createCsr, generateKeyPair, privateKeyToPem } from './key-material.ts';

/** What a workload holds after a successful signing. The key never leaves this process. */
export interface WorkloadCredentials {
  readonly keyPem: string;
  /** Leaf first, then intermediates. */
  readonly chainPem: readonly string[];
  /** Roots trusted for peers (several during a root rotation). */
  readonly trustBundlePem: readonly string[];
  readonly facts: CertificateFacts;
}

interface SignedCertificate {
  readonly chainPem: readonly string[];
  readonly trustBundlePem: readonly string[];
}

/** Asks the CA to sign a CSR. `current` lets the CA authenticate a renewal by certificate. */
export type CertificateSigner = (request: { csrPem: string; ttlSeconds: number }, current: WorkloadCredentials | undefined, signal: AbortSignal) => Promise<SignedCertificate>;

/** Whether the CA answers at all (a TCP connect): resolves false rather than rejecting. */
export type ReachabilityProbe = (signal: AbortSignal) => Promise<boolean>;

export interface CertificateManagerOptions {
  readonly keyType: KeyType;
  readonly ttlSeconds: number;
  /** Renew after this fraction of the lifetime (0.5 = half-way). */
  readonly renewFraction: number;
  /** +/- share of the lifetime added at random to the renewal time, so sidecars do not renew in lockstep. */
  readonly jitterFraction: number;
  readonly expectedSpiffeId: string | undefined;
  readonly retry: {
    readonly baseMs: number;
    readonly maxMs: number;
    /**
     * While waiting out a backoff, ask `probe` every `probeIntervalMs` whether
     * the CA answers; the first yes after a no ends the wait. 0 or no probe: the backoff alone.
     */
    readonly probeIntervalMs?: number;
    readonly probe?: ReachabilityProbe;
  };
}

export interface CertificateManager {
  /** The current credentials, or undefined before the first signing. Possibly expired: check valid(). */
  current(): WorkloadCredentials | undefined;
  /** True while the current certificate is within its validity period. */
  valid(): boolean;
  /** Called with every new certificate (never concurrently). */
  onRotate(listener: (creds: WorkloadCredentials) => void): void;
  /** Called when the current certificate expires with no successor: time to fail closed. */
  onExpire(listener: () => void): void;
  /** Resolves with the first certificate; rejects if `signal` aborts first. */
  first(signal?: AbortSignal): Promise<WorkloadCredentials>;
  /** The renewal loop: attempt -> keep the last good certificate on failure -> sleep -> again. Never throws. */
  run(signal: AbortSignal): Promise<void>;
  /** Renewals and failures so far, for metrics and tests. */
  stats(): { readonly issued: number; readonly failures: number; readonly lastError: string | undefined };
}

/** Whether `creds` may be used at `nowMs`: within its validity, with a minute of slack for a CA clock running ahead. */
export function validAt(creds: WorkloadCredentials, nowMs: number): boolean {
  return nowMs < creds.facts.notAfter.getTime() && nowMs >= creds.facts.notBefore.getTime() - 60_000;
}

/**
 * The sidecar's certificate loop, shaped like linkerd2-proxy's certify loop:
 * a fresh key and CSR per attempt, renewal at a fraction of the lifetime with
 * jitter, jittered backoff while the CA is away, and the old certificate kept
 * serving until it expires (after which valid() turns false and readiness drops).
 */
export function createCertificateManager(signer: CertificateSigner, opts: CertificateManagerOptions, deps: { clock: Clock; random: Random; logger: Logger }): CertificateManager {
  let creds: WorkloadCredentials | undefined;
  const listeners: Array<(c: WorkloadCredentials) => void> = [];
  const expireListeners: Array<() => void> = [];
  const waiters: Array<(c: WorkloadCredentials) => void> = [];
  let issued = 0;
  let failures = 0;
  let lastError: string | undefined;

  const attempt = async (signal: AbortSignal): Promise<WorkloadCredentials> => {
    const keys = await generateKeyPair(opts.keyType);
    const csrPem = await createCsr(keys, opts.keyType);
    const signed = await signer({ csrPem, ttlSeconds: opts.ttlSeconds }, creds, signal);
    const leaf = signed.chainPem[0];
    if (!leaf) throw new Error('CA returned an empty certificate chain');
    const facts = certificateFacts(leaf);
    if (opts.expectedSpiffeId && facts.spiffeId !== opts.expectedSpiffeId) {
      throw new Error(`CA issued ${facts.spiffeId ?? 'no SPIFFE ID'}, expected ${opts.expectedSpiffeId}`);
    }
    if (signed.trustBundlePem.length === 0) throw new Error('CA returned an empty trust bundle');
    return { keyPem: await privateKeyToPem(keys.privateKey), chainPem: signed.chainPem, trustBundlePem: signed.trustBundlePem, facts };
  };

  // Measured from receipt, not notBefore: CAs backdate notBefore for clock skew,
  // which would otherwise pull renewal of short-lived certificates far forward.
  const renewDelay = (c: WorkloadCredentials): number => {
    const receivedAt = deps.clock.now();
    const lifetime = Math.max(0, c.facts.notAfter.getTime() - receivedAt);
    const jitter = (deps.random() * 2 - 1) * opts.jitterFraction * lifetime;
    return Math.max(0, lifetime * opts.renewFraction + jitter);
  };

  const expiry = createExpiryTimer(
    deps.clock,
    () => creds,
    () => {
      for (const listener of expireListeners) listener();
    },
  );

  const install = (next: WorkloadCredentials): void => {
    creds = next;
    issued++;
    expiry.watch(next);
    for (const listener of listeners) {
      try {
        listener(next);
      } catch (err) {
        deps.logger.error({ err: (err as Error).message }, 'installing a rotated certificate failed');
      }
    }
    for (const wake of waiters.splice(0)) wake(next);
  };

  return {
    current: () => creds,
    valid: () => creds !== undefined && validAt(creds, deps.clock.now()),
    onRotate: (listener) => void listeners.push(listener),
    onExpire: (listener) => void expireListeners.push(listener),
    first(signal) {
      if (creds) return Promise.resolve(creds);
      return new Promise((resolve, reject) => {
        waiters.push(resolve);
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
    },
    async run(signal) {
      await runBackgroundLoop(
        async (stepSignal) => {
          const next = await attempt(stepSignal);
          install(next);
          lastError = undefined;
          const delay = renewDelay(next);
          deps.logger.info({ spiffeId: next.facts.spiffeId, serial: next.facts.serial, notAfter: next.facts.notAfter.toISOString(), renewInMs: Math.round(delay) }, 'certificate issued');
          return delay;
        },
        {
          signal,
          backoff: opts.retry,
          random: deps.random,
          // Retry well before the current certificate runs out, however long the backoff has grown.
          maxRetryDelayMs: () => (creds ? Math.max(opts.retry.baseMs, (creds.facts.notAfter.getTime() - deps.clock.now()) / 4) : Infinity),
          onError: (err, _failuresInRow, retryInMs) => {
            failures++;
            lastError = (err as Error).message;
            deps.logger.warn(
              { err: lastError, retryInMs: Math.round(retryInMs), servingUntil: creds?.facts.notAfter.toISOString() ?? null },
              'certificate signing failed; keeping the current certificate',
            );
          },
          waitAfterFailure: async (ms, waitSignal) => {
            if ((await waitForRetry(ms, opts.retry, waitSignal)) === 'reachable') deps.logger.info({ err: lastError }, 'CA reachable again; retrying now');
          },
          ref: true, // the sidecar runs for its certificate: this loop is what keeps it going
        },
      );
      expiry.stop();
    },
    stats: () => ({ issued, failures, lastError }),
  };
}

/**
 * Sleeps `delayMs`, or less when the probe sees the CA come back: a "no"
 * (the first probe goes at once) followed by a "yes". A CA that answers TCP
 * but refused the signing (a bad token, a rate limit, a TLS mismatch) never
 * gives the "no", so it gets the full backoff, not a retry per probe.
 * Rejects when `signal` aborts.
 */
async function waitForRetry(delayMs: number, retry: CertificateManagerOptions['retry'], signal: AbortSignal): Promise<'elapsed' | 'reachable'> {
  const interval = retry.probeIntervalMs ?? 0;
  const probe = retry.probe;
  if (!probe || interval <= 0 || interval >= delayMs) {
    await sleep(delayMs, signal);
    return 'elapsed';
  }
  const settled = new AbortController();
  const stop = AbortSignal.any([signal, settled.signal]);
  try {
    return await new Promise<'elapsed' | 'reachable'>((resolve, reject) => {
      sleep(delayMs, stop).then(() => resolve('elapsed'), reject);
      void (async () => {
        let sawDown = false;
        // The first probe goes at once: whether the CA is down right now is what the next "yes" is measured against.
        while (!stop.aborted) {
          if (!(await probe(stop))) sawDown = true;
          else if (sawDown && !stop.aborted) return resolve('reachable');
          await sleep(interval, stop);
        }
      })().catch(() => {
        // Aborted: the sleep above settles the promise.
      });
    });
  } finally {
    settled.abort();
  }
}
