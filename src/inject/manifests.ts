import type { Document } from 'yaml';
import { parseAllDocuments } from 'yaml';
import type { InjectionOutcome, InjectionSettings } from './pod-injection.ts';
import { injectPod } from './pod-injection.ts';

/*
 * `meshgate inject -f FILE`: every pod template of a multi-document YAML
 * stream goes through injectPod, and its changes are set in the parsed
 * document, so the rest of the file (comments, order, other kinds) comes out
 * as it went in.
 */

/** Where each workload kind keeps its pod template. */
const TEMPLATE_PATHS: Readonly<Record<string, readonly string[]>> = {
  Pod: [],
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  ReplicationController: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

export interface ManifestReport {
  /** 0-based index of the document in the stream. */
  readonly document: number;
  /** `Kind/name`. */
  readonly object: string;
  readonly outcome: InjectionOutcome;
}

export class ManifestError extends Error {
  override readonly name = 'ManifestError';
}

/**
 * Injects every pod template in `text`. Throws ManifestError for YAML that
 * does not parse; a refused pod is a report, and the caller decides (the CLI
 * prints nothing then, so a pipe into kubectl never applies half a file).
 */
export function injectManifests(text: string, file: string, settings: InjectionSettings, defaultNamespace: string): { output: string; reports: ManifestReport[] } {
  const docs = parseAllDocuments(text, { uniqueKeys: true });
  if (!Array.isArray(docs)) throw new ManifestError(`${file}: not a YAML stream`);
  const reports: ManifestReport[] = [];
  docs.forEach((doc, index) => {
    const error = doc.errors[0];
    if (error) {
      const line = error.linePos?.[0];
      throw new ManifestError(`${file}:${line ? `${line.line}:${line.col}` : ''} document ${index}: invalid YAML: ${error.message.split('\n')[0]}`);
    }
    visit(doc, doc.toJS() as unknown, [], index, settings, defaultNamespace, reports);
  });
  return { output: docs.map(String).join(''), reports };
}

function visit(doc: Document, object: unknown, at: readonly (string | number)[], index: number, settings: InjectionSettings, defaultNamespace: string, reports: ManifestReport[]): void {
  if (object === null || typeof object !== 'object') return;
  const { kind, metadata, items } = object as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown }; items?: unknown };
  if (kind === 'List' && Array.isArray(items)) {
    items.forEach((item, i) => visit(doc, item, [...at, 'items', i], index, settings, defaultNamespace, reports));
    return;
  }
  if (typeof kind !== 'string' || !(kind in TEMPLATE_PATHS)) return;
  const templatePath = TEMPLATE_PATHS[kind]!;
  let template: unknown = object;
  for (const key of templatePath) template = (template as Record<string, unknown> | undefined)?.[key];
  const { metadata: podMetadata, spec } = (template ?? {}) as { metadata?: unknown; spec?: unknown };
  const namespace = typeof metadata?.namespace === 'string' ? metadata.namespace : defaultNamespace;
  const outcome = injectPod({ metadata: podMetadata, spec, namespace }, settings);
  reports.push({ document: index, object: `${kind}/${typeof metadata?.name === 'string' ? metadata.name : '(unnamed)'}`, outcome });
  if (outcome.status !== 'injected') return;
  for (const change of outcome.changes) doc.setIn([...at, ...templatePath, ...change.path], doc.createNode(change.value));
}
