import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

/*
 * Kubernetes API validation for tests, from kubernetes-models (the API's
 * OpenAPI schemas compiled to validators): types, enums, required fields.
 * Those validators accept unknown fields, which `kubectl apply` (strict field
 * validation, the default since 1.27) rejects; so unknown fields are checked
 * here too, against the property lists of the package's type declarations.
 */

const ROOT = path.join(import.meta.dirname, '../../node_modules');

/** apiVersion -> folder of kubernetes-models. */
const GROUPS: Record<string, string> = {
  v1: 'kubernetes-models/v1',
  'apps/v1': 'kubernetes-models/apps/v1',
  'batch/v1': 'kubernetes-models/batch/v1',
  'policy/v1': 'kubernetes-models/policy/v1',
  'rbac.authorization.k8s.io/v1': 'kubernetes-models/rbac.authorization.k8s.io/v1',
  'admissionregistration.k8s.io/v1': 'kubernetes-models/admissionregistration.k8s.io/v1',
  'networking.k8s.io/v1': 'kubernetes-models/networking.k8s.io/v1',
};

interface Shape {
  /** Property name -> declaration file of its object type (or of its array's element type); null for scalars and maps. */
  readonly props: Map<string, { file: string | null; array: boolean }>;
}

const shapes = new Map<string, Shape | null>();

function shapeOf(file: string): Shape | null {
  if (shapes.has(file)) return shapes.get(file)!;
  const text = readFileSync(file, 'utf8');
  const imports = new Map<string, string>();
  for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) {
    const spec = m[2]!;
    const target = spec.startsWith('.') ? path.resolve(path.dirname(file), spec.replace(/\.js$/, '.d.ts')) : path.join(ROOT, `${spec}.d.ts`);
    imports.set(m[1]!, target);
  }
  const start = text.search(/^export interface \w+/m);
  if (start < 0) {
    shapes.set(file, null);
    return null;
  }
  const body = text.slice(start, text.indexOf('\n}', start));
  const props = new Map<string, { file: string | null; array: boolean }>();
  for (const m of body.matchAll(/^ {4}"([^"]+)"\??: (.+?);?$/gm)) {
    const type = m[2]!;
    const array = /^Array<(\w+)>$/.exec(type);
    const name = array ? array[1]! : type;
    const target = imports.get(name);
    props.set(m[1]!, { file: target && existsSync(target) ? target : null, array: Boolean(array) });
  }
  // An interface without properties (FieldsV1, RawExtension) holds free-form JSON.
  const shape = props.size > 0 ? { props } : null;
  shapes.set(file, shape);
  return shape;
}

function unknownFields(value: unknown, file: string, at: string, out: string[]): void {
  if (value === null || typeof value !== 'object') return;
  const shape = shapeOf(file);
  if (!shape) return;
  for (const [key, child] of Object.entries(value)) {
    const prop = shape.props.get(key);
    if (!prop) {
      out.push(`${at}/${key}: unknown field`);
      continue;
    }
    if (!prop.file) continue;
    if (prop.array && Array.isArray(child)) child.forEach((item, i) => unknownFields(item, prop.file!, `${at}/${key}/${i}`, out));
    else if (!prop.array) unknownFields(child, prop.file, `${at}/${key}`, out);
  }
}

/** Problems of one manifest object (empty when the API server would accept its shape). */
export async function k8sProblems(object: unknown): Promise<string[]> {
  const { apiVersion, kind } = (object ?? {}) as { apiVersion?: string; kind?: string };
  const group = apiVersion ? GROUPS[apiVersion] : undefined;
  if (!group || !kind) return [`${apiVersion}/${kind}: not a known apiVersion and kind`];
  const file = path.join(ROOT, group, `${kind}.d.ts`);
  if (!existsSync(file)) return [`${apiVersion}/${kind}: no such kind`];
  const module = (await import(path.join(ROOT, group, `${kind}.js`))) as Record<string, new (data: unknown) => { validate(): void }>;
  const problems: string[] = [];
  try {
    new module[kind]!(object).validate();
  } catch (err) {
    problems.push(...(err as Error).message.split('\n'));
  }
  unknownFields(object, file, '', problems);
  return problems.map((p) => `${kind}/${(object as { metadata?: { name?: string } }).metadata?.name ?? '?'}: ${p}`);
}
