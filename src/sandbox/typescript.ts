import { stripTypeScriptTypes } from 'node:module';

/** Where a check's source fails to compile: 1-based line and column, as an editor shows them. */
export interface SourceProblem {
  readonly line: number;
  readonly column: number;
  readonly message: string;
}

export type StripResult = { readonly ok: true; readonly js: string } | { readonly ok: false; readonly problem: SourceProblem };

/**
 * A check's TypeScript -> JavaScript with Node's own type stripping (the same
 * SWC build Node runs .ts files with). Strip mode replaces each annotation
 * with spaces, so every line and column of the output is the source's: a
 * QuickJS error points at the line the user wrote. Syntax that needs a
 * transform (enum, namespace, parameter properties) is refused, as Node
 * refuses it for our own sources.
 */
export function stripTypes(source: string): StripResult {
  try {
    return { ok: true, js: withoutExperimentalWarning(() => stripTypeScriptTypes(source, { mode: 'strip' })) };
  } catch (err) {
    return { ok: false, problem: syntaxProblem(err as Error) };
  }
}

/**
 * Node puts the location only in the error's stack, as
 * `:LINE\n<source line>\n<spaces>^^^\n\nSyntaxError [...]: message`: the
 * caret's offset is the column.
 */
function syntaxProblem(err: Error): SourceProblem {
  const message = err.message.split('\n')[0] ?? 'syntax error';
  const lines = (err.stack ?? '').split('\n');
  const lineMatch = /^:(\d+)$/.exec(lines[0] ?? '');
  const caret = lines.findIndex((l, i) => i > 0 && /^\s*\^+\s*$/.test(l));
  const line = lineMatch ? Number(lineMatch[1]) : 1;
  const column = caret > 0 ? lines[caret]!.indexOf('^') + 1 : 1;
  return { line, column, message };
}

/**
 * Node 24 marks stripTypeScriptTypes experimental and warns on stderr the
 * first time it runs: noise in `policy check`'s one-line-per-error output and
 * in a sidecar's log for a function Node itself uses to run our sources.
 */
function withoutExperimentalWarning<T>(fn: () => T): T {
  const emit = process.emitWarning;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const text = typeof warning === 'string' ? warning : warning.message;
    if (text.includes('stripTypeScriptTypes')) return;
    (emit as (...args: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  try {
    return fn();
  } finally {
    process.emitWarning = emit;
  }
}
