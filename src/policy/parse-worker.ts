import type { MessagePort } from 'node:worker_threads';
import { parentPort, workerData } from 'node:worker_threads';
import type { PolicyLimits } from './limits.ts';
import { parsePolicyText } from './parse-documents.ts';
import { createPolicyValidator } from './validate.ts';

/*
 * The worker thread behind src/policy/parse-in-worker.ts: parses and
 * validates one policy file per message, so a large or hostile file costs
 * this thread's time and heap, never the event loop that serves streams and
 * /live. One validator for the worker's life keeps regex verdicts cached.
 */

export interface ParseRequest {
  readonly id: number;
  readonly text: string;
  readonly file: string;
}

function serve(port: MessagePort, limits: Partial<PolicyLimits>): void {
  const validator = createPolicyValidator({ limits });
  port.on('message', ({ id, text, file }: ParseRequest) => {
    try {
      const { documents, errors } = parsePolicyText(text, file, { validator });
      port.postMessage({ id, ok: true, documents, errors });
    } catch (err) {
      port.postMessage({ id, ok: false, message: (err as Error).message.split('\n')[0] });
    }
  });
  // Modules loaded, validator built: the client's time budget for a file starts from here.
  port.postMessage({ ready: true });
}

if (parentPort) serve(parentPort, (workerData as { limits?: Partial<PolicyLimits> } | undefined)?.limits ?? {});
