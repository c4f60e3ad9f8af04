import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parse, parseAllDocuments } from 'yaml';

/*
 * A small kustomize, for tests (kustomize itself is not installable here).
 * It renders what deploy/k8s uses and nothing more: resources (files and
 * kustomization folders), namespace, labels (metadata only), images,
 * configMapGenerator (files; behavior create or replace; no name hash), and
 * patches: strategic-merge files (lists of named items merged by name,
 * other lists replaced) and inline JSON 6902 `add`/`replace`/`remove` with
 * a target. Anything else in a kustomization is an error, so the test notices
 * when deploy/k8s outgrows this renderer.
 */

export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown }; [k: string]: any };

const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration', 'PersistentVolume', 'StorageClass']);
const KNOWN_FIELDS = new Set(['apiVersion', 'kind', 'namespace', 'labels', 'resources', 'configMapGenerator', 'images', 'patches']);

export function readYamlObjects(file: string): K8sObject[] {
  return parseAllDocuments(readFileSync(file, 'utf8'))
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]!.message}`);
      return doc.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
}

export function renderKustomization(dir: string): K8sObject[] {
  const k = parse(readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8')) as Record<string, any>;
  for (const key of Object.keys(k)) if (!KNOWN_FIELDS.has(key)) throw new Error(`${dir}/kustomization.yaml: field ${key} is not supported by the test renderer`);
  let objects: K8sObject[] = [];
  for (const resource of k.resources ?? []) {
    const target = path.join(dir, resource);
    objects.push(...(statSync(target).isDirectory() ? renderKustomization(target) : readYamlObjects(target)));
  }
  for (const gen of k.configMapGenerator ?? []) {
    const data: Record<string, string> = {};
    for (const file of gen.files ?? []) data[path.basename(file)] = readFileSync(path.join(dir, file), 'utf8');
    const generated: K8sObject = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: gen.name }, data };
    const existing = objects.findIndex((o) => o.kind === 'ConfigMap' && o.metadata.name === gen.name);
    if (gen.behavior === 'replace') {
      if (existing < 0) throw new Error(`${dir}: configMapGenerator ${gen.name}: nothing to replace`);
      objects[existing] = { ...generated, metadata: { ...objects[existing]!.metadata } };
    } else {
      if (existing >= 0) throw new Error(`${dir}: configMapGenerator ${gen.name}: already exists`);
      objects.push(generated);
    }
  }
  for (const patch of k.patches ?? []) {
    if (patch.path) {
      for (const p of readYamlObjects(path.join(dir, patch.path))) {
        const i = objects.findIndex((o) => o.kind === p.kind && o.metadata.name === p.metadata.name);
        if (i < 0) throw new Error(`${dir}/${patch.path}: no ${p.kind}/${p.metadata.name} to patch`);
        objects[i] = strategicMerge(objects[i], p) as K8sObject;
      }
    } else {
      const t = patch.target;
      const matches = objects.filter((o) => o.kind === t.kind && o.metadata.name === t.name);
      if (matches.length !== 1) throw new Error(`${dir}: patch target ${t.kind}/${t.name} matches ${matches.length} objects`);
      for (const op of parse(patch.patch) as { op: string; path: string; value?: unknown }[]) jsonPatch(matches[0]!, op);
    }
  }
  if (k.namespace) {
    objects = objects.map((o) => (CLUSTER_SCOPED.has(o.kind) ? o : { ...o, metadata: { ...o.metadata, namespace: k.namespace } }));
  }
  for (const { pairs } of k.labels ?? []) {
    objects = objects.map((o) => ({ ...o, metadata: { ...o.metadata, labels: { ...o.metadata.labels, ...pairs } } }));
  }
  for (const image of k.images ?? []) {
    for (const o of objects) {
      const spec = o.spec?.template?.spec;
      for (const c of [...(spec?.containers ?? []), ...(spec?.initContainers ?? [])]) {
        const [name] = String(c.image).split(':');
        if (name === image.name) c.image = `${image.newName ?? name}:${image.newTag}`;
      }
    }
  }
  return objects;
}

/** Strategic merge as kustomize does it for the fields deploy/k8s patches: maps merge, named list items merge by name. */
function strategicMerge(base: unknown, patch: unknown): unknown {
  if (Array.isArray(base) && Array.isArray(patch) && patch.every((p) => p && typeof p === 'object' && 'name' in p)) {
    const out = base.map((item) => structuredClone(item));
    for (const p of patch) {
      const i = out.findIndex((item) => item?.name === p.name);
      if (i < 0) out.push(structuredClone(p));
      else out[i] = strategicMerge(out[i], p);
    }
    return out;
  }
  if (base && patch && typeof base === 'object' && typeof patch === 'object' && !Array.isArray(base) && !Array.isArray(patch)) {
    const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
    for (const [key, value] of Object.entries(patch)) out[key] = key in out ? strategicMerge(out[key], value) : structuredClone(value);
    return out;
  }
  return structuredClone(patch);
}

function jsonPatch(target: Record<string, any>, op: { op: string; path: string; value?: unknown }): void {
  const keys = op.path
    .split('/')
    .slice(1)
    .map((k) => k.replaceAll('~1', '/').replaceAll('~0', '~'));
  let parent: any = target;
  for (const key of keys.slice(0, -1)) {
    parent = parent[Array.isArray(parent) ? Number(key) : key];
    if (parent === undefined) throw new Error(`json patch ${op.path}: no parent`);
  }
  const last = keys.at(-1)!;
  if (op.op === 'remove') delete parent[last];
  else if (op.op === 'add' || op.op === 'replace') {
    if (Array.isArray(parent) && last === '-') parent.push(op.value);
    else parent[Array.isArray(parent) ? Number(last) : last] = op.value;
  } else throw new Error(`json patch op ${op.op} is not supported by the test renderer`);
}
