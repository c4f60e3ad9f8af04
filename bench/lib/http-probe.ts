import { request } from 'node:http';
import type { Child } from './processes.ts';
import { describeExit, firstOutputLine } from './processes.ts';

export interface ProbeResponse {
  readonly status: number;
  readonly body: string;
}

/** One request (GET unless `send` says otherwise) on a fresh connection; rejects on network error or after `timeoutMs`. */
export function probe(
  url: string,
  headers: Readonly<Record<string, string>>,
  timeoutMs: number,
  send: { readonly method?: string | undefined; readonly body?: string | undefined } = {},
): Promise<ProbeResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: send.method ?? 'GET', headers, agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < 64 * 1024) body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no response within ${timeoutMs}ms`)));
    req.on('error', reject);
    req.end(send.body);
  });
}

export type ReadyResult = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * Polls `url` every `pollMs` until it answers 200, the child exits, or
 * `deadlineMs` passes. The failure reason names the child's first line of
 * output, which is where a CLI prints why it refused to start.
 */
export async function waitForHttpOk(child: Child, url: string, deadlineMs: number, pollMs = 100): Promise<ReadyResult> {
  const deadline = Date.now() + deadlineMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child.hasExited()) {
      const exit = await child.exited;
      return { ok: false, reason: `${child.name} ${describeExit(exit)}: ${firstOutputLine(child) ?? 'no output'}` };
    }
    try {
      const res = await probe(url, {}, 1000);
      if (res.status === 200) return { ok: true };
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  const output = firstOutputLine(child);
  return { ok: false, reason: `${url} not 200 after ${deadlineMs / 1000}s (${last})${output ? `: ${output}` : ''}` };
}

/**
 * Waits for the first stdout line of one of our Node child servers, a JSON
 * object `{"port": N}` printed once it listens.
 */
export async function readListeningPort(child: Child, firstLine: Promise<string>, deadlineMs: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${child.name}: not listening after ${deadlineMs / 1000}s`)), deadlineMs);
  });
  const exited = child.exited.then((exit): never => {
    throw new Error(`${child.name} ${describeExit(exit)}: ${firstOutputLine(child) ?? 'no output'}`);
  });
  try {
    const line = await Promise.race([firstLine, timeout, exited]);
    const port = (JSON.parse(line) as { port?: unknown }).port;
    if (typeof port !== 'number') throw new Error(`${child.name}: unexpected first line ${JSON.stringify(line)}`);
    return port;
  } finally {
    clearTimeout(timer);
  }
}

/** GET `url`, retried every 100 ms while the connection is refused, up to `deadlineMs`. */
export async function probeUntilListening(url: string, headers: Readonly<Record<string, string>>, deadlineMs: number): Promise<ProbeResponse> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await probe(url, headers, 3000);
    } catch (err) {
      if (Date.now() >= deadline || !/ECONNREFUSED/.test((err as Error).message)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
