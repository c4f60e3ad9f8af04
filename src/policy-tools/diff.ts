import type { PolicyDocument } from '../policy/types.ts';
import type { ExplainCall, ExplainOptions } from './explain.ts';
import { explainCall, parseWorkload } from './explain.ts';

/*
 * `meshgate policy diff`: recorded calls (access-log JSON lines, field names
 * of src/telemetry/access-log.ts) replayed against two policy sets with the
 * evaluation of `policy explain`; the calls whose outcome changes are listed.
 * The log keeps no credentials (no token, no claims): replayed calls carry no
 * request principal, and authn is not evaluated. IP access is evaluated with
 * the logged `source_address`. No headers either: ValidationPolicy is not
 * evaluated.
 */

export interface ReplayedCall {
  /** 1-based line number in the log. */
  readonly line: number;
  readonly call: ExplainCall;
}

export interface ParsedLog {
  readonly calls: readonly ReplayedCall[];
  /** Lines that are not JSON objects (blank lines are not counted). */
  readonly notJson: number;
  /** JSON lines that are not inbound calls (outbound, process log lines, no destination). */
  readonly notInbound: number;
}

const GRPC_PATH = /^\/[^/]+\.[^/]+\/[^/]+$/;

/** One access-log record as a call description, or undefined when it is not an inbound call. */
function callOfLogRecord(record: Record<string, unknown>): ExplainCall | undefined {
  if (record.direction !== 'inbound') return undefined;
  const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
  const method = str(record.method);
  const path = str(record.path);
  const destination = str(record.destination_service);
  const to = destination ? parseWorkload(destination) : undefined;
  if (!method || !path || !to) return undefined;
  const userAgent = str(record.user_agent);
  // The log keeps no content-type: an HTTP/2 POST to /package.Service/Method is taken for gRPC.
  const grpc = record.protocol === 'HTTP/2' && method === 'POST' && GRPC_PATH.test(path);
  const authority = str(record.authority);
  const address = str(record.source_address);
  return {
    from: str(record.source_principal),
    to,
    method,
    path,
    ...(authority ? { authority } : {}),
    ...(address ? { address } : {}),
    headers: { ...(userAgent ? { 'user-agent': userAgent } : {}), ...(grpc ? { 'content-type': 'application/grpc' } : {}) },
    grpc,
  };
}

export function parseAccessLog(text: string): ParsedLog {
  const calls: ReplayedCall[] = [];
  let notJson = 0;
  let notInbound = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      notJson++;
      return;
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) {
      notJson++;
      return;
    }
    const call = callOfLogRecord(record as Record<string, unknown>);
    if (!call) notInbound++;
    else calls.push({ line: i + 1, call });
  });
  return { calls, notJson, notInbound };
}

interface Outcome {
  readonly allow: boolean;
  readonly code: string | undefined;
  readonly rule: string | undefined;
  readonly reason: string;
}

export interface ChangedCall {
  readonly line: number;
  readonly call: ExplainCall;
  readonly old: Outcome;
  readonly new: Outcome;
}

export interface PolicyDiff {
  readonly replayed: number;
  readonly changed: readonly ChangedCall[];
}

export async function diffPolicies(oldDocuments: readonly PolicyDocument[], newDocuments: readonly PolicyDocument[], calls: readonly ReplayedCall[], opts: ExplainOptions = {}): Promise<PolicyDiff> {
  const changed: ChangedCall[] = [];
  for (const { line, call } of calls) {
    // The log keeps no headers: ValidationPolicy would refuse every replayed call that must carry one.
    const replay: ExplainOptions = { ...opts, validation: false, versions: false };
    const [before, after] = await Promise.all([explainCall(oldDocuments, call, replay), explainCall(newDocuments, call, replay)]);
    if (before.allow === after.allow) continue;
    const outcome = (e: typeof before): Outcome => ({ allow: e.allow, code: e.code, rule: e.rule, reason: e.reason });
    changed.push({ line, call, old: outcome(before), new: outcome(after) });
  }
  return { replayed: calls.length, changed };
}

function side(o: Outcome): string {
  return o.rule ?? (o.allow ? `default: ${o.reason}` : `${o.code}, default: ${o.reason}`);
}

/** One line per changed call, as `policy diff` prints them. */
export function formatChange(c: ChangedCall): string {
  const verdict = (o: Outcome): string => (o.allow ? 'allow' : 'deny');
  const from = c.call.from ?? '(no peer identity)';
  return `${verdict(c.old)} -> ${verdict(c.new)}  ${c.call.method} ${c.call.path}  ${from} -> ${c.call.to.service}.${c.call.to.namespace}  (old: ${side(c.old)}; new: ${side(c.new)})  [line ${c.line}]`;
}

export function summaryLine(diff: PolicyDiff, log: Pick<ParsedLog, 'notJson' | 'notInbound'>): string {
  const skipped = log.notJson + log.notInbound;
  const tail = skipped > 0 ? ` (${skipped} ${skipped === 1 ? 'line' : 'lines'} skipped: ${log.notJson} not JSON, ${log.notInbound} not inbound)` : '';
  return `${diff.replayed} calls replayed, ${diff.changed.length} changed${tail}`;
}
