import type { CallContext } from '../../core/call-context.ts';
import { createDecisionIds } from '../../core/decision-id.ts';
import type { Filter } from '../../core/filter.ts';
import type { Verdict } from '../../core/verdict.ts';
import { CONTINUE, respond } from '../../core/verdict.ts';
import { isFilterDocument, programSpecOf } from '../../policy/filter-sources.ts';
import type { FilterDocument, FilterStage } from '../../policy/kinds/filter.ts';
import { documentDigest } from '../../policy/snapshot.ts';
import type { PolicyDocument } from '../../policy/types.ts';
import type { SandboxFailureKind, SandboxLoader, SandboxProgram } from '../../sandbox/quickjs-sandbox.ts';
import { createSandboxLoader } from '../../sandbox/quickjs-sandbox.ts';
import type { FilterDeps } from '../filter-kind.ts';
import { callViewOf } from './call-view.ts';
import type { SecretFiles } from './secret-files.ts';
import type { HeaderEdits } from './verdict-of.ts';
import { verdictOf } from './verdict-of.ts';

/*
 * Checks of your own (Filter documents), run in the QuickJS sandbox at their
 * stage of the inbound chain. Programs are compiled when a snapshot arrives
 * (prepare, asynchronous: the engine and each program's WebAssembly instance
 * load asynchronously) and the chain is built from them afterwards, so a call
 * never waits for a compile. A program serves every snapshot whose document
 * is unchanged (same digest). A chain holds its programs: calls in flight on
 * an old chain finish on the versions they started with, and an old program
 * is disposed once no chain that uses it is reachable any more (a
 * FinalizationRegistry on the chain's filters) and the newest snapshot does
 * not use it either.
 */

type Decision = 'allow' | 'deny' | 'edit' | 'shadow_deny' | 'failed_deny' | 'failed_allow';

interface UserFilterMetrics {
  readonly userFilterDecisions: {
    inc(labels: { policy: string; decision: Decision; code: string }): void;
    labels(labels: { policy: string; decision: Decision; code: string }): { inc(): void };
  };
  readonly shadowDenials: { inc(labels: { policy: string; rule: string }): void };
}

interface UserFilterLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export interface UserFilterRuntimeDeps extends FilterDeps {
  readonly metrics?: UserFilterMetrics;
  readonly logger?: UserFilterLogger;
  /** Shares one engine with other owners (the sidecar's source checks); default: one of its own, loaded on first use. */
  readonly sandbox?: SandboxLoader;
  /** Keys checks may sign with by name (sidecar userFilters.secretsDir); none without it. */
  readonly secrets?: SecretFiles;
}

interface Entry {
  /** undefined while compiling. */
  program: SandboxProgram | undefined;
  problem: string | undefined;
  /** Live chains (stage filters) that hold this program. */
  holders: number;
  /** Set while compiling. */
  ready: Promise<void> | undefined;
}

export interface UserFilterRuntime {
  /** The engine it compiles with (shared with the sidecar's source checks: one engine per process). */
  readonly sandbox: SandboxLoader;
  /** Compiles the programs of `documents`' Filters not compiled yet; undefined when there is nothing to wait for. Never rejects. */
  prepare(documents: readonly PolicyDocument[]): Promise<void> | undefined;
  /**
   * Compiles `doc`'s program as prepare does and says why it failed (`line L, column C: message`),
   * or undefined when it compiled: the sidecar's check of a received source, so the program it
   * compiles is the one the chain then runs (one compile per version, not one to check and one to run).
   */
  check(doc: FilterDocument): Promise<string | undefined>;
  /** One filter per stage that has Filter documents, for one snapshot; empty stages are absent. */
  compile(documents: readonly PolicyDocument[]): Partial<Record<FilterStage, Filter>>;
  /** Disposes every program (the sidecar is stopping). */
  close(): void;
  /** Programs alive now (for tests and /config_dump). */
  programs(): number;
}

interface CompiledCheck {
  readonly doc: FilterDocument;
  readonly policy: string;
  readonly entry: Entry | undefined;
  /** meshgate_user_filter_decisions_total{decision="allow" | "edit"} of this document. */
  readonly allowed: { inc(): void } | undefined;
  readonly edited: { inc(): void } | undefined;
}

export function createUserFilterRuntime(deps: UserFilterRuntimeDeps): UserFilterRuntime {
  const sandbox = deps.sandbox ?? createSandboxLoader();
  const { metrics, logger } = deps;
  const nextId = createDecisionIds(deps.random);
  const entries = new Map<string, Entry>();
  let current = new Set<string>();

  const sweep = (): void => {
    for (const [key, entry] of entries) {
      if (entry.holders > 0 || current.has(key) || entry.ready) continue;
      entry.program?.dispose();
      entries.delete(key);
    }
  };
  const released = new FinalizationRegistry<Entry[]>((held) => {
    for (const entry of held) entry.holders--;
    sweep();
  });

  /**
   * Compiles one document's program into its entry. Never rejects: a failure is the entry's problem,
   * logged when `report` (a program the chain will run; the sidecar's source check reports its own).
   */
  const compileEntry = async (doc: FilterDocument, entry: Entry, report: boolean): Promise<void> => {
    try {
      const secretKey = deps.secrets?.forDocument(doc.spec.secrets);
      const compiled = await (await sandbox.load()).compile({ ...programSpecOf(doc), ...(secretKey ? { secretKey } : {}) });
      if (compiled.ok) entry.program = compiled.program;
      else entry.problem = `line ${compiled.problem.line}, column ${compiled.problem.column}: ${compiled.problem.message}`;
    } catch (err) {
      entry.problem = `the sandbox failed: ${(err as Error).message}`;
    }
    if (entry.problem && report) logger?.error({ policy: `${doc.metadata.namespace}/${doc.metadata.name}`, error: entry.problem }, 'check of your own does not compile; its calls get its failureMode');
  };

  const count = (policy: string, decision: Decision, code: string): void => {
    try {
      metrics?.userFilterDecisions.inc({ policy, decision, code });
    } catch {
      // Telemetry never breaks traffic (STYLE.md #8).
    }
  };

  const stageFilter = (stage: FilterStage, checks: readonly CompiledCheck[]): Filter => {
    const failed = (call: CallContext, check: CompiledCheck, kind: SandboxFailureKind | 'not_compiled', message: string, decisionId: string): Verdict | undefined => {
      const shadow = check.doc.spec.mode === 'shadow';
      const allow = check.doc.spec.failureMode === 'allow';
      count(check.policy, shadow ? 'shadow_deny' : allow ? 'failed_allow' : 'failed_deny', kind);
      try {
        logger?.warn(
          { decision_id: decisionId, policy: check.policy, failure: kind, error: message, failure_mode: check.doc.spec.failureMode, shadow, request_id: call.id, method: call.method, path: call.path },
          allow || shadow ? 'check of your own failed; the call goes on (failureMode: allow or shadow)' : 'check of your own failed; the call is refused (failureMode: deny)',
        );
      } catch {
        // A broken log sink must not fail the call.
      }
      if (shadow || allow) return undefined;
      call.annotations.decision = 'deny';
      call.annotations.rule = check.policy;
      call.annotations.decisionId = decisionId;
      return respond('filter.user_check_failed', 'a check of this service could not decide; the call is refused', { rule: check.policy, decisionId });
    };

    const applyEdits = (call: CallContext, edits: HeaderEdits): void => {
      const target = (call.annotations.upstreamEdits ??= { removeHeaders: [], setHeaders: {} });
      for (const name of edits.remove) {
        target.removeHeaders.push(name);
        delete target.setHeaders[name];
      }
      for (const [name, value] of Object.entries(edits.set)) target.setHeaders[name] = value;
    };

    return {
      name: `user-filter:${stage}`,
      onRequest(call) {
        const input = JSON.stringify(callViewOf(call));
        for (const check of checks) {
          const program = check.entry?.program;
          if (!program) {
            const v = failed(call, check, 'not_compiled', check.entry?.problem ?? 'the check was not compiled on this sidecar', nextId());
            if (v) return v;
            continue;
          }
          const outcome = program.call(input);
          if (!outcome.ok) {
            const v = failed(call, check, outcome.failure.kind, outcome.failure.message, nextId());
            if (v) return v;
            continue;
          }
          const result = verdictOf(outcome.value);
          if (result.kind === 'invalid') {
            const v = failed(call, check, 'bad_result', result.message, nextId());
            if (v) return v;
            continue;
          }
          const shadow = check.doc.spec.mode === 'shadow';
          if (result.kind === 'allow') {
            // The common case: a counter child made once per chain, no decision id (an allow names no rule).
            try {
              (result.edits ? check.edited : check.allowed)?.inc();
            } catch {
              // Telemetry never breaks traffic (STYLE.md #8).
            }
            if (result.edits && !shadow) applyEdits(call, result.edits);
            continue;
          }
          const decisionId = nextId();
          const rule = `${check.policy}#${result.code}`;
          try {
            logger?.info(
              { decision_id: decisionId, rule, reason: result.reason, shadow, request_id: call.id, method: call.method, path: call.path, source_principal: call.source.principal },
              shadow ? 'check of your own would deny (shadow)' : 'check of your own denied the call',
            );
          } catch {
            // A broken log sink must not fail the call.
          }
          if (shadow) {
            count(check.policy, 'shadow_deny', result.code);
            (call.annotations.shadowDenials ??= []).push(rule);
            try {
              metrics?.shadowDenials.inc({ policy: check.policy, rule: result.code });
            } catch {
              // A broken metric must not fail the call.
            }
            continue;
          }
          count(check.policy, 'deny', result.code);
          call.annotations.decision = 'deny';
          call.annotations.rule = rule;
          call.annotations.decisionId = decisionId;
          return respond('filter.denied', result.reason, { rule, decisionId, ...(result.status !== undefined ? { status: result.status } : {}) });
        }
        return CONTINUE;
      },
    };
  };

  /** Entries are made at once, so a later snapshot that needs a version still compiling waits for the same compile. */
  const prepareEntries = (documents: readonly PolicyDocument[], report: boolean): Promise<void> | undefined => {
    const waits: Promise<void>[] = [];
    for (const doc of documents.filter(isFilterDocument)) {
      const key = documentDigest(doc);
      const known = entries.get(key);
      if (known) {
        if (known.ready) waits.push(known.ready);
        continue;
      }
      const entry: Entry = { program: undefined, problem: undefined, holders: 0, ready: undefined };
      entries.set(key, entry);
      entry.ready = compileEntry(doc, entry, report).finally(() => {
        entry.ready = undefined;
      });
      waits.push(entry.ready);
    }
    return waits.length === 0 ? undefined : Promise.all(waits).then(() => undefined);
  };

  return {
    sandbox,
    prepare: (documents) => prepareEntries(documents, true),
    async check(doc) {
      // Not logged here: the source check refuses the document (a NACK with line and column) and it never runs.
      await prepareEntries([doc], false);
      // Swept like any program no snapshot uses, should the snapshot that brought it be refused.
      return entries.get(documentDigest(doc))?.problem;
    },
    compile(documents) {
      const filters = documents.filter(isFilterDocument).sort((a, b) => (a.metadata.namespace + '/' + a.metadata.name < b.metadata.namespace + '/' + b.metadata.name ? -1 : 1));
      current = new Set(filters.map((doc) => documentDigest(doc)));
      const out: Partial<Record<FilterStage, Filter>> = {};
      for (const stage of ['after-authn', 'after-authz', 'before-validate'] as const) {
        const checks = filters
          .filter((doc) => doc.spec.stage === stage)
          .map((doc) => {
            const policy = `${doc.metadata.namespace}/${doc.metadata.name}`;
            const child = (decision: Decision) => metrics?.userFilterDecisions.labels({ policy, decision, code: '' });
            return { doc, policy, entry: entries.get(documentDigest(doc)), allowed: child('allow'), edited: child('edit') };
          });
        if (checks.length === 0) continue;
        const held = checks.flatMap((c) => (c.entry ? [c.entry] : []));
        for (const entry of held) entry.holders++;
        const filter = stageFilter(stage, checks);
        released.register(filter, held);
        out[stage] = filter;
      }
      sweep();
      return out;
    },
    close() {
      for (const entry of entries.values()) entry.program?.dispose();
      entries.clear();
    },
    programs: () => [...entries.values()].filter((e) => e.program && !e.program.disposed).length,
  };
}
