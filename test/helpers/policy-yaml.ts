import { stringify } from 'yaml';

/** A policy document as a user writes it (YAML), in namespace `namespace` (default shop). */
export function policyYaml(kind: string, name: string, spec: Record<string, unknown>, namespace = 'shop'): string {
  return stringify({ apiVersion: 'meshgate.dev/v1', kind, metadata: { name, namespace }, spec });
}
