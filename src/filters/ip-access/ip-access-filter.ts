import type { CallContext } from '../../core/call-context.ts';
import type { Filter } from '../../core/filter.ts';
import { CONTINUE, respond } from '../../core/verdict.ts';
import type { IPAccessPolicySpec } from '../../policy/kinds/ip-access-policy.ts';
import { isKind } from '../../policy/typed-documents.ts';
import type { PolicyDocument } from '../../policy/types.ts';
import type { AddressSet, ClientAddressResult } from '../../proxy/client-address.ts';
import { compileAddressSet, createClientAddressResolver } from '../../proxy/client-address.ts';
import type { FilterDeps, FilterKind } from '../filter-kind.ts';
import type { AutoBanSettings, BanList, BanListEvents } from './ban-list.ts';
import { createBanList } from './ban-list.ts';

/*
 * IP access from IPAccessPolicy documents, compiled once per snapshot: the
 * first filter of the inbound chain, since refusing by address costs less than
 * anything after it.
 *
 * - Each document is its own check, with its own trusted proxies, and a call
 *   must pass every one of them: adding a document never admits more.
 * - Within a document, deny wins over allow; a non-empty allow list admits
 *   only the addresses in it.
 * - When a document's trusted proxy forwarded something that is not an
 *   address, a document with lists refuses the call (it cannot tell who is
 *   calling, so it cannot tell that the caller is allowed).
 * - Auto-ban: one setting for the workload, the strictest of the documents
 *   that have one (lowest threshold, longest window and duration, largest
 *   size), counted against the client address as those documents' trusted
 *   proxies resolve it.
 */

interface CompiledDocument {
  readonly id: string;
  readonly resolve: (remote: string, headers: CallContext['headers']) => ClientAddressResult;
  readonly allow: AddressSet | undefined;
  readonly deny: AddressSet | undefined;
}

/** What outlives every snapshot's filter: created once per sidecar. */
export interface IPAccessRuntime {
  /**
   * The sidecar's ban list: compiling a snapshot installs its auto-ban
   * settings into it (or turns auto-ban off when no document has one).
   */
  readonly banList: BanList;
}

export interface IPAccessRuntimeDeps extends FilterDeps {
  /** Bans, evictions and lifts, for the metrics and the log. */
  readonly events?: BanListEvents;
}

export function createIPAccessRuntime(deps: IPAccessRuntimeDeps): IPAccessRuntime {
  return { banList: createBanList({ clock: deps.clock, ...(deps.events ? { events: deps.events } : {}) }) };
}

export function createIPAccessFilter(documents: readonly PolicyDocument[], runtime: IPAccessRuntime): Filter {
  const checks: CompiledDocument[] = [];
  const banDocs: { id: string; spec: IPAccessPolicySpec }[] = [];
  for (const doc of documents) {
    if (!isKind(doc, 'IPAccessPolicy')) continue;
    const spec = doc.spec;
    const id = `${doc.metadata.namespace}/${doc.metadata.name}`;
    if (spec.autoBan) banDocs.push({ id, spec });
    const allow = spec.allow && spec.allow.length > 0 ? compileAddressSet(spec.allow) : undefined;
    const deny = spec.deny && spec.deny.length > 0 ? compileAddressSet(spec.deny) : undefined;
    if (!allow && !deny) continue;
    checks.push({ id, resolve: createClientAddressResolver(spec.trustedProxies ?? []), allow, deny });
  }

  const banList = runtime.banList;
  const banRule = banDocs[0] ? `${banDocs[0].id}#autoBan` : undefined;
  const banAddress = banDocs.length > 0 ? createClientAddressResolver(banDocs.flatMap((d) => d.spec.trustedProxies ?? [])) : undefined;
  banList.configure(banAddress ? { settings: strictest(banDocs.map((d) => d.spec.autoBan!)), clientAddress: (call) => banAddress(call.source.address, call.headers) } : undefined);
  const bans = banAddress ? { list: banList, address: banAddress } : undefined;

  if (checks.length === 0 && !bans) return { name: 'ip-access', onRequest: () => CONTINUE };
  return {
    name: 'ip-access',
    onRequest(call) {
      for (const check of checks) {
        const client = check.resolve(call.source.address, call.headers);
        if (!client) return respond('ip.denied', 'the client address could not be determined from x-forwarded-for', { rule: `${check.id}#trustedProxies` });
        if (check.deny?.has(client.address, client.family)) return respond('ip.denied', `address ${client.address} is not allowed`, { rule: `${check.id}#deny` });
        if (check.allow && !check.allow.has(client.address, client.family)) return respond('ip.denied', `address ${client.address} is not allowed`, { rule: `${check.id}#allow` });
      }
      if (bans) {
        const client = bans.address(call.source.address, call.headers);
        const hit = client ? bans.list.check(client.address) : undefined;
        if (client && hit) {
          const seconds = Math.max(1, Math.ceil(hit.remainingMs / 1000));
          return respond('ip.banned', `address ${client.address} is banned for ${seconds} s after repeated refused calls`, {
            rule: banRule,
            headers: { 'retry-after': String(seconds) },
          });
        }
      }
      return CONTINUE;
    },
  };
}

/** IP access: the first filter of the inbound chain. */
export const ipAccessKind: FilterKind<IPAccessRuntime> = { name: 'ip-access', compile: createIPAccessFilter };

/** One setting from several documents: the one that bans soonest, longest and most. */
function strictest(all: readonly NonNullable<IPAccessPolicySpec['autoBan']>[]): AutoBanSettings {
  return {
    threshold: Math.min(...all.map((a) => a.threshold)),
    window: Math.max(...all.map((a) => a.window)),
    duration: Math.max(...all.map((a) => a.duration)),
    maxEntries: Math.max(...all.map((a) => a.maxEntries)),
  };
}
