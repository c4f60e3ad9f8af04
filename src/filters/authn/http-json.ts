import type { Dispatcher } from 'undici';

export interface HttpJsonRequest {
  readonly method: 'GET' | 'POST';
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string;
  readonly timeoutMs: number;
  readonly maxBytes: number;
  readonly dispatcher: Dispatcher | undefined;
}

export type HttpJsonResult = { readonly ok: true; readonly status: number; readonly json: unknown } | { readonly ok: false; readonly problem: string };

/**
 * One request whose answer is JSON, with undici: bounded in time (connect to
 * last byte) and size, no redirects followed (undici's default), never
 * throws. Problems are short texts for logs; they never echo the request.
 */
export async function fetchJson(url: string, req: HttpJsonRequest): Promise<HttpJsonResult> {
  try {
    // Loaded with the first JWKS or introspection fetch: a policy with neither never loads undici.
    const { request } = await import('undici');
    const res = await request(url, {
      method: req.method,
      headers: req.headers,
      ...(req.body !== undefined ? { body: req.body } : {}),
      signal: AbortSignal.timeout(req.timeoutMs),
      ...(req.dispatcher ? { dispatcher: req.dispatcher } : {}),
    });
    if (res.statusCode !== 200) {
      await res.body.dump();
      return { ok: false, problem: `HTTP ${res.statusCode}` };
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > req.maxBytes) {
        res.body.destroy();
        return { ok: false, problem: `answer larger than ${req.maxBytes} bytes` };
      }
      chunks.push(chunk);
    }
    try {
      return { ok: true, status: res.statusCode, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown };
    } catch {
      return { ok: false, problem: 'answer is not JSON' };
    }
  } catch (err) {
    const e = err as { name?: string; code?: string; message?: string };
    if (e.name === 'TimeoutError' || e.name === 'AbortError') return { ok: false, problem: `no answer within ${req.timeoutMs} ms` };
    return { ok: false, problem: e.code ?? e.message ?? 'request failed' };
  }
}
