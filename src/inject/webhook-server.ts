import type { FSWatcher } from 'node:fs';
import { watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import type { Clock } from '../core/clock.ts';
import { listenOn } from '../core/listen.ts';
import type { ReasonCode } from '../core/reason-codes.ts';
import type { Logger } from '../telemetry/logger.ts';
import { collectProcessMetrics } from '../telemetry/process-metrics.ts';
import { Counter, Histogram, Registry } from '../telemetry/prom-client.ts';
import { AdmissionReviewError, decideAdmission } from './admission.ts';
import type { InjectionSettings } from './pod-injection.ts';

/*
 * `meshgate injector`: the mutating admission webhook. HTTPS only (the API
 * server calls webhooks over TLS, checking the caBundle), on 15017 by default:
 *   POST /inject   AdmissionReview v1 -> AdmissionReview v1 with a JSON Patch
 *   GET  /live, /ready, /metrics
 * The API server gives a webhook a few seconds (timeoutSeconds); each review
 * is answered from memory, with no call out.
 */

/** The API server bounds requests at 3 MiB; a review is at most that plus its envelope. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

export interface InjectorServerOptions {
  readonly settings: InjectionSettings;
  readonly tls: { readonly cert: string; readonly key: string };
  /** The files `tls` was read from: watched, and a renewed pair is served from then on (the last good pair stays otherwise). */
  readonly reloadFrom?: { readonly certFile: string; readonly keyFile: string };
  readonly logger: Logger;
  readonly clock: Clock;
  readonly defaultMetrics?: boolean;
}

export interface InjectorServer {
  listen(port: number, host: string): Promise<AddressInfo>;
  readonly registry: Registry;
  close(): Promise<void>;
}

export function createInjectorServer(opts: InjectorServerOptions): InjectorServer {
  const registry = new Registry();
  if (opts.defaultMetrics) collectProcessMetrics(registry);
  const reviews = new Counter({
    name: 'meshgate_injector_reviews_total',
    help: 'AdmissionReviews answered, by result (injected, skipped, refused, ignored, malformed) and dry_run.',
    labelNames: ['result', 'dry_run'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'meshgate_injector_review_duration_seconds',
    help: 'Time to answer one AdmissionReview, reading the body included.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  const log = opts.logger;
  const server = https.createServer({ cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2', requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/inject') {
      if (req.method !== 'POST') return sendError(res, 405, 'request.malformed', 'POST an AdmissionReview to /inject');
      handleReview(req, res).catch((err: unknown) => {
        log.error({ err }, 'admission review failed');
        if (!res.headersSent) sendError(res, 500, 'filter.error', 'the injector failed; nothing was decided');
      });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendError(res, 405, 'request.malformed', 'method not allowed');
    if (path === '/live' || path === '/ready') return send(res, 200, 'text/plain', `${path.slice(1)}\n`);
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => send(res, 200, registry.contentType, text),
        () => send(res, 500, 'text/plain', 'metrics unavailable\n'),
      );
      return;
    }
    return sendError(res, 404, 'route.not_found', `no such path: ${path}`);
  });

  async function handleReview(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = opts.clock.monotonic();
    const type = String(req.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim()
      .toLowerCase();
    if (type !== 'application/json') {
      reviews.inc({ result: 'malformed', dry_run: 'false' });
      return sendError(res, 415, 'request.malformed', `expected content-type application/json, got ${JSON.stringify(type)}`);
    }
    let body: unknown;
    try {
      body = JSON.parse(await readBody(req));
    } catch (err) {
      reviews.inc({ result: 'malformed', dry_run: 'false' });
      if (err instanceof BodyTooLarge) return sendError(res, 413, 'request.body_too_large', `AdmissionReview larger than ${MAX_BODY_BYTES} bytes`);
      return sendError(res, 400, 'request.malformed', 'body is not JSON');
    }
    try {
      const decision = decideAdmission(body, opts.settings);
      reviews.inc({ result: decision.result, dry_run: String(decision.dryRun) });
      duration.observe((opts.clock.monotonic() - started) / 1000);
      // Names and outcomes only: a pod spec may carry secrets in its env.
      const line = { pod: decision.pod, result: decision.result, detail: decision.detail, dryRun: decision.dryRun };
      if (decision.result === 'refused') log.warn(line, 'pod refused');
      else log.info(line, 'admission review');
      send(res, 200, 'application/json', JSON.stringify(decision.review));
    } catch (err) {
      if (!(err instanceof AdmissionReviewError)) throw err;
      reviews.inc({ result: 'malformed', dry_run: 'false' });
      sendError(res, 400, 'request.malformed', err.message);
    }
  }

  const stopWatching = opts.reloadFrom ? watchCertificate(server, opts.reloadFrom, log) : () => {};
  return {
    registry,
    listen: (port, host) => listenOn(server, port, host),
    close() {
      stopWatching();
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A Secret mounted in a pod is replaced by an atomic symlink swap in its
 * folder: watch the folders, wait for the writer to finish, reload both files.
 * A pair that does not load is logged and the previous one keeps serving.
 */
function watchCertificate(server: https.Server, files: { readonly certFile: string; readonly keyFile: string }, log: Logger): () => void {
  let timer: NodeJS.Timeout | undefined;
  const reload = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      Promise.all([readFile(files.certFile, 'utf8'), readFile(files.keyFile, 'utf8')])
        .then(([cert, key]) => {
          tls.createSecureContext({ cert, key }); // throws on a pair that does not match or parse
          server.setSecureContext({ cert, key, minVersion: 'TLSv1.2' });
          log.info({ certFile: files.certFile }, 'injector certificate reloaded');
        })
        .catch((err: Error) => log.error({ certFile: files.certFile, err: err.message }, 'injector certificate not reloaded; keeping the previous one'));
    }, 100);
  };
  const folders = new Set([path.dirname(path.resolve(files.certFile)), path.dirname(path.resolve(files.keyFile))]);
  const watchers: FSWatcher[] = [...folders].map((folder) => watch(folder, { persistent: false }, reload));
  return () => {
    clearTimeout(timer);
    for (const watcher of watchers) watcher.close();
  };
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        req.resume();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** The house error shape: a JSON {code, reason} and the x-meshgate-reason header. */
function sendError(res: ServerResponse, status: number, code: ReasonCode<'data'>, reason: string): void {
  const body = JSON.stringify({ code, reason });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-meshgate-reason': code });
  res.end(body);
}
