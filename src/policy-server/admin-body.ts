import type { IncomingMessage } from 'node:http';
import { parseYaml } from '../config/yaml-bounded.ts';
import { DEFAULT_POLICY_LIMITS } from '../policy/limits.ts';
import { formatFieldPath } from '../policy/policy-error.ts';

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

export type ParsedBody = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly field: string; readonly reason: string };

/**
 * One YAML (or JSON: YAML 1.2 reads it) document, read within the policy
 * limits before the work they bound (src/config/yaml-bounded.ts): nodes and
 * documents counted first, duplicate keys found in linear time, keys per
 * mapping and alias expansion ("billion laughs") capped. The yaml package's
 * own duplicate-key check is quadratic: a 250 KiB body of one mapping took
 * seconds of the event loop.
 */
export function parseDocumentBody(text: string): ParsedBody {
  const limits = DEFAULT_POLICY_LIMITS;
  const parsed = parseYaml(
    text,
    {
      maxNodes: limits.maxNodesPerFile,
      maxDocuments: limits.maxDocumentsPerFile,
      maxKeysPerMapping: limits.maxKeysPerMapping,
      maxAliasCount: limits.maxAliasCount,
    },
    { maxProblems: 1 },
  );
  if (!parsed.ok) return { ok: false, field: '', reason: parsed.reason };
  const docs = parsed.documents;
  if (docs.length === 0) return { ok: false, field: '', reason: 'empty body: expected one policy document' };
  if (docs.length !== 1) return { ok: false, field: '', reason: `expected one policy document, got ${docs.length}` };
  const doc = docs[0]!;
  const problem = doc.problems[0];
  if (problem) {
    const at = problem.line > 0 ? ` at ${problem.line}:${problem.column}` : '';
    return problem.syntax || problem.path.length === 0
      ? { ok: false, field: '', reason: `invalid YAML${at}: ${problem.reason}` }
      : { ok: false, field: formatFieldPath(problem.path), reason: `invalid YAML${at}: ${problem.reason}` };
  }
  const value = doc.value;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { ok: false, field: '', reason: 'expected a mapping (a policy document)' };
  return { ok: true, value };
}
