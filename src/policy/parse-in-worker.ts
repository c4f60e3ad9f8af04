import { Worker } from 'node:worker_threads';
import { deepFreeze } from '../config/load.ts';
import type { PolicyLimits } from './limits.ts';
import type { ParsedDocuments } from './parse-documents.ts';
import type { ParseRequest } from './parse-worker.ts';
import { TOP_LEVEL_FIELD } from './policy-error.ts';
import type { ValidDocument } from './validate.ts';

/*
 * Policy files parsed and validated on a worker thread. Parsing is CPU work
 * that no limit makes free (a file at the limits still costs seconds), and
 * on the server's own thread it stalled every stream and /live meanwhile.
 * Here it is bounded in time and heap as well: a file that takes longer
 * than `timeoutMs`, or exhausts the worker's heap, is rejected whole (fail
 * closed: none of its documents apply, and the worker is replaced).
 */

export interface WorkerParserOptions {
  /** Limits for the worker's validator (default: the policy defaults). */
  readonly limits?: Partial<PolicyLimits>;
  /** Time one file may take. */
  readonly timeoutMs?: number;
  /** Old-generation heap of the worker, in MiB. */
  readonly maxHeapMb?: number;
}

export interface WorkerPolicyParser {
  /** As parsePolicyText(text, file): never rejects; a failure is an error on the file. */
  parse(text: string, file: string): Promise<ParsedDocuments>;
  /** Stops the worker; later calls to parse start a new one. */
  close(): Promise<void>;
}

type Reply = { ready: true } | { id: number; ok: true; documents: ValidDocument[]; errors: ParsedDocuments['errors'] } | { id: number; ok: false; message: string };

interface Job {
  readonly request: ParseRequest;
  readonly resolve: (result: ParsedDocuments) => void;
}

// Beside this file: parse-worker.ts in the sources, parse-worker.js in the bundle (scripts/build.ts).
const WORKER_URL = new URL(`./parse-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);

export function createWorkerPolicyParser(options: WorkerParserOptions = {}): WorkerPolicyParser {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const maxHeapMb = options.maxHeapMb ?? 512;
  const queue: Job[] = [];
  let worker: { readonly thread: Worker; ready: boolean } | undefined;
  // The job in hand; its timer runs from when the worker has it (a worker's start-up is not the file's time).
  let current: { readonly job: Job; timer: NodeJS.Timeout | undefined } | undefined;
  let nextId = 0;

  const fileError = (file: string, reason: string): ParsedDocuments => ({
    documents: [],
    errors: [{ source: { file, index: 0 }, document: undefined, field: TOP_LEVEL_FIELD, reason: `${reason}; no document of it applies` }],
  });

  const finish = (result: ParsedDocuments): void => {
    if (!current) return;
    clearTimeout(current.timer);
    const { job } = current;
    current = undefined;
    job.resolve(result);
    startNext();
  };

  /** The worker is gone (crashed, out of memory, or stopped by us): the file in hand fails, the next one gets a new worker. */
  const lose = (thread: Worker, reason: string): void => {
    if (worker?.thread !== thread) return;
    worker = undefined;
    void thread.terminate();
    if (current) finish(fileError(current.job.request.file, reason));
  };

  const dispatch = (): void => {
    if (!current || !worker?.ready || current.timer) return;
    const { thread } = worker;
    current.timer = setTimeout(() => lose(thread, `could not be parsed within ${timeoutMs} ms`), timeoutMs);
    thread.postMessage(current.job.request);
  };

  const spawn = (): { thread: Worker; ready: boolean } => {
    const thread = new Worker(WORKER_URL, { workerData: { limits: options.limits ?? {} }, resourceLimits: { maxOldGenerationSizeMb: maxHeapMb } });
    const state = { thread, ready: false };
    thread.on('message', (reply: Reply) => {
      if ('ready' in reply) {
        state.ready = true;
        return dispatch();
      }
      if (!current || reply.id !== current.job.request.id) return;
      if (!reply.ok) return finish(fileError(current.job.request.file, `could not be parsed (${reply.message})`));
      // Structured cloning drops the freeze the validator put on each document.
      finish({ documents: reply.documents.map((d) => deepFreeze(d)), errors: reply.errors });
    });
    thread.on('error', (err: Error & { code?: string }) => {
      lose(thread, err.code === 'ERR_WORKER_OUT_OF_MEMORY' ? `could not be parsed: the parser ran out of memory (${maxHeapMb} MiB)` : `could not be parsed (${err.message.split('\n')[0]})`);
    });
    thread.on('exit', (code) => lose(thread, `could not be parsed: the parser stopped (exit code ${code})`));
    return state;
  };

  const startNext = (): void => {
    const job = queue.shift();
    if (!job) {
      worker?.thread.unref(); // an idle worker never keeps the process alive
      return;
    }
    worker ??= spawn();
    worker.thread.ref();
    current = { job, timer: undefined };
    dispatch();
  };

  return {
    parse(text, file) {
      return new Promise<ParsedDocuments>((resolve) => {
        queue.push({ request: { id: nextId++, text, file }, resolve });
        if (!current) startNext();
      });
    },
    async close() {
      const w = worker?.thread;
      worker = undefined;
      const waiting = queue.splice(0); // before finish(), which would start the next job
      if (current) finish(fileError(current.job.request.file, 'could not be parsed: the parser was stopped'));
      for (const job of waiting) job.resolve(fileError(job.request.file, 'could not be parsed: the parser was stopped'));
      await w?.terminate();
    },
  };
}
