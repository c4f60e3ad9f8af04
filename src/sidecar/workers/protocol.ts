import type { SidecarConfig } from '../../config/sidecar-schema.ts';
import type { WorkloadCredentials } from '../../identity/cert-manager.ts';
import type { EffectiveSnapshot } from '../policy/subscriber.ts';

/*
 * The messages between a sidecar's primary and its worker processes, over the
 * cluster IPC channel (a socket pair only these two processes hold; 'advanced'
 * serialization, so Dates and nested documents arrive as sent). The primary
 * runs the only CA client and policy subscriber; a worker serves calls with
 * what it is handed and answers the admin questions the primary asks it.
 * Every type starts with `meshgate:`: other users of the channel (Node's own
 * cluster messages, prom-client's) are told apart by it.
 */

/** Set in a worker's environment (with its slot number) by the primary; src/cli/main.ts reads it. */
export const WORKER_ENV = 'MESHGATE_SIDECAR_WORKER';

/** The policy a primary hands its workers: a snapshot, or none yet (the onNoPolicy chain; nothing admitted when the disk copy was distrusted). */
export type PolicyState = { readonly kind: 'snapshot'; readonly snapshot: EffectiveSnapshot } | { readonly kind: 'none'; readonly distrustedCopy: boolean };

export interface WorkerInit {
  /** Slot 1..N; a restarted worker takes the slot of the one it replaces. */
  readonly worker: number;
  /** The primary's config: paths resolved, and after the first worker bound them, the ports it got for port 0. */
  readonly config: SidecarConfig;
  readonly configFile: string | undefined;
  /** The certificate in force (with its key); undefined without identity. */
  readonly credentials: WorkloadCredentials | undefined;
  /** The policy in force; undefined without a policy section. */
  readonly policy: PolicyState | undefined;
}

export interface ListeningPorts {
  readonly outbound: number;
  readonly inbound: number;
  readonly edge: number | undefined;
}

/** What the primary's admin listener asks a worker. */
export type Question =
  | { readonly kind: 'readiness' }
  | { readonly kind: 'configDump' }
  | { readonly kind: 'metrics' }
  | { readonly kind: 'bans' }
  | { readonly kind: 'unban'; readonly address: string };

export type ToWorker =
  | { readonly type: 'meshgate:init'; readonly init: WorkerInit }
  | { readonly type: 'meshgate:credentials'; readonly credentials: WorkloadCredentials }
  | { readonly type: 'meshgate:policy'; readonly policy: PolicyState }
  | { readonly type: 'meshgate:ask'; readonly id: number; readonly question: Question }
  | { readonly type: 'meshgate:drain'; readonly timeoutMs: number };

/** A start-up failure as the primary rethrows it: a ConfigError stays one, a bind error keeps its code and address. */
export interface FailureReport {
  readonly name: string;
  readonly message: string;
  readonly code?: string | undefined;
  readonly address?: string | undefined;
  readonly port?: number | undefined;
}

export type FromWorker =
  | { readonly type: 'meshgate:hello' }
  | { readonly type: 'meshgate:listening'; readonly ports: ListeningPorts }
  | { readonly type: 'meshgate:failed'; readonly error: FailureReport }
  | { readonly type: 'meshgate:answer'; readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly type: 'meshgate:answer'; readonly id: number; readonly ok: false; readonly error: string }
  | { readonly type: 'meshgate:drained'; readonly completed: boolean };

function isOurs(message: unknown): message is { type: string } {
  return typeof message === 'object' && message !== null && typeof (message as { type?: unknown }).type === 'string' && (message as { type: string }).type.startsWith('meshgate:');
}

export const isFromWorker = (message: unknown): message is FromWorker => isOurs(message);
export const isToWorker = (message: unknown): message is ToWorker => isOurs(message);
