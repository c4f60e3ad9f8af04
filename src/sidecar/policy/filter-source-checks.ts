import type { FilterSourceProblem } from '../../policy/filter-sources.ts';
import { checkFilterSource, checkFilterSourceWith, isFilterDocument } from '../../policy/filter-sources.ts';
import type { FilterDocument } from '../../policy/kinds/filter.ts';
import { documentDigest } from '../../policy/snapshot.ts';
import type { SandboxLoader } from '../../sandbox/quickjs-sandbox.ts';
import type { DocumentValidator } from './subscriber-validate.ts';

/** Results kept: a policy has a handful of Filter documents; old versions age out. */
const MAX_RESULTS = 256;

export interface FilterSourceChecks {
  /** Compiles the Filter sources among `envelopes` not checked yet; undefined when there is nothing to wait for. Never rejects. */
  prepare(envelopes: readonly { readonly kind: string; readonly json: string; readonly javascript?: string }[]): Promise<void> | undefined;
  /** `base`, refusing a Filter document whose source did not compile (or was not checked: fail closed). */
  validator(base: DocumentValidator): DocumentValidator;
}

/**
 * A sidecar's own check of the Filter sources it receives, so it NACKs one
 * that does not compile (with its line and column) instead of enforcing its
 * failure mode on every call. The validator is synchronous and the sandbox
 * is not: the subscriber awaits `prepare` for a snapshot before it applies
 * it, and the validator reads the verdicts. The sandbox loads on the first
 * Filter document, never for a policy without one.
 */
export function createFilterSourceChecks(
  sandbox: SandboxLoader,
  base: DocumentValidator,
  /**
   * Compiles a document's program where it will run (the sidecar's own filter runtime, which keeps
   * it) and says why it failed; without it, a program is compiled to check the source and thrown away
   * (a sidecar's primary, whose workers run the programs).
   */
  compileInRuntime?: (doc: FilterDocument) => Promise<string | undefined>,
): FilterSourceChecks {
  const results = new Map<string, { field: string; reason: string } | null>();

  return {
    prepare(envelopes) {
      const docs = envelopes.flatMap((envelope) => {
        if (envelope.kind !== 'Filter') return [];
        let raw: unknown;
        try {
          raw = JSON.parse(envelope.json);
        } catch {
          return []; // refused by the validator, with the reason
        }
        const checked = base(raw);
        // The server's JavaScript for this source: the checks below and the runtime compile it without stripping types here.
        if (checked.ok && isFilterDocument(checked.document) && checked.document.spec.source !== undefined && envelope.javascript) {
          sandbox.knowJavaScript(checked.document.spec.source, envelope.javascript);
        }
        return checked.ok && isFilterDocument(checked.document) && !results.has(documentDigest(checked.document)) ? [checked.document] : [];
      });
      if (docs.length === 0) return undefined;
      const remember = (doc: FilterDocument, problem: FilterSourceProblem | null): void => {
        results.set(documentDigest(doc), problem);
        if (results.size > MAX_RESULTS) results.delete(results.keys().next().value!);
      };
      if (compileInRuntime) {
        return (async () => {
          for (const doc of docs) remember(doc, (await checkFilterSourceWith(doc, () => compileInRuntime(doc))) ?? null);
        })();
      }
      return (async () => {
        const engine = await sandbox.load().catch(() => undefined);
        for (const doc of docs) {
          const problem = engine
            ? await checkFilterSource(doc, engine).catch((err: Error): FilterSourceProblem => ({ field: 'spec.source', reason: `the sandbox failed: ${err.message}` }))
            : undefined;
          remember(doc, problem ?? (engine ? null : ({ field: 'spec.source', reason: 'the sandbox could not be loaded on this sidecar' } as const)));
        }
      })();
    },
    validator(inner) {
      return (raw) => {
        const result = inner(raw);
        if (!result.ok || !isFilterDocument(result.document)) return result;
        const problem = results.get(documentDigest(result.document));
        if (problem === null) return result;
        return { ok: false, errors: [problem ?? { field: 'spec.source', reason: 'the source was not checked in the sandbox before the snapshot applied' }] };
      };
    },
  };
}
