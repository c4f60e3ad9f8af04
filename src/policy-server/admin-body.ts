import type { IncomingMessage } from 'node:http';
import { LineCounter, parseAllDocuments } from 'yaml';

export type BodyResult = { readonly ok: true; readonly text: string } | { readonly ok: false; readonly tooLarge: true };

/**
 * Reads a request body up to `max` bytes. A declared Content-Length over the
 * cap is refused before a byte is read; a body that grows past it is
 * abandoned (the reply closes the connection, see admin-api).
 */
export function readBody(req: IncomingMessage, max: number): Promise<BodyResult> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) return Promise.resolve({ ok: false, tooLarge: true });
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (result: BodyResult) => {
      if (done) return;
      done = true;
      req.off('data', onData);
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        req.pause();
        finish({ ok: false, tooLarge: true });
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => finish({ ok: true, text: Buffer.concat(chunks).toString('utf8') }));
    req.once('error', (err) => {
      if (!done) {
        done = true;
        reject(err);
      }
    });
    req.once('close', () => {
      if (!done) {
        done = true;
        reject(new Error('request closed before its body was complete'));
      }
    });
  });
}

export type ParsedBody =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly field: string; readonly reason: string };

/**
 * One YAML (or JSON: YAML 1.2 reads it) document. Duplicate keys are an
 * error and alias expansion is bounded by the yaml library's default
 * (maxAliasCount 100), against billion-laughs bodies.
 */
export function parseDocumentBody(text: string): ParsedBody {
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { prettyErrors: false, uniqueKeys: true, lineCounter });
  if (!Array.isArray(docs) || docs.length === 0) return { ok: false, field: '', reason: 'empty body: expected one policy document' };
  if (docs.length !== 1) return { ok: false, field: '', reason: `expected one policy document, got ${docs.length}` };
  const doc = docs[0]!;
  const problem = doc.errors[0];
  if (problem) {
    const at = lineCounter.linePos(problem.pos[0]);
    return { ok: false, field: '', reason: `invalid YAML at ${at.line}:${at.col}: ${problem.message.split('\n')[0]}` };
  }
  try {
    const value: unknown = doc.toJS();
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return { ok: false, field: '', reason: 'expected a mapping (a policy document)' };
    return { ok: true, value };
  } catch (err) {
    return { ok: false, field: '', reason: `invalid YAML: ${(err as Error).message.split('\n')[0]}` };
  }
}
