import { resolveServiceRef } from './kinds/route.ts';
import type { PolicyDocument, WorkloadRef } from './types.ts';
import { MESH_ROOT_NAMESPACE } from './types.ts';

/**
 * Whether a document applies to a workload. A document applies to workloads of
 * its own namespace, and a document of the mesh root namespace
 * (`meshgate-system`) to workloads of every namespace. `spec.selector.services`
 * narrows that to the listed service names (in the root namespace: services of
 * that name in any namespace); absent or empty, every service qualifies.
 *
 * For a Route, the workload is the caller: the Route says how it reaches
 * `spec.service`. A Route with `responses` applies to `spec.service` too,
 * whose own sidecar applies them (the schema allows them only in that
 * service's namespace or the mesh root).
 */
export function documentApplies(doc: PolicyDocument, workload: WorkloadRef): boolean {
  if (doc.kind === 'Route' && doc.spec.responses !== undefined && isRouteDestination(doc, workload)) return true;
  return selectorApplies(doc, workload);
}

/** Whether a document's namespace and selector pick a workload (for a Route: as a caller). */
export function selectorApplies(doc: PolicyDocument, workload: WorkloadRef): boolean {
  const namespace = doc.metadata.namespace;
  if (namespace !== workload.namespace && namespace !== MESH_ROOT_NAMESPACE) return false;
  const services = doc.spec.selector?.services;
  return services === undefined || services.length === 0 || services.includes(workload.service);
}

/** The documents (or entries holding one) that apply to a workload, in their input order. */
export function selectDocuments<T extends PolicyDocument | { readonly document: PolicyDocument }>(entries: readonly T[], workload: WorkloadRef): T[] {
  return entries.filter((entry) => documentApplies('document' in entry ? entry.document : entry, workload));
}

/** Whether `workload` is the service a Route leads to. */
export function isRouteDestination(doc: PolicyDocument, workload: WorkloadRef): boolean {
  const target = resolveServiceRef(String(doc.spec.service), doc.metadata.namespace);
  return target.name === workload.service && target.namespace === workload.namespace;
}
