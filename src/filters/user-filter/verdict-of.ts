/*
 * A check's return value -> what the sidecar does with it. The value came out
 * of the guest as JSON, so it is plain data; it is still the user's, and is
 * checked field by field: a header edit could otherwise smuggle a line break
 * or rewrite the framing of the request to the app.
 */

export type CheckResult =
  | { readonly kind: 'allow'; readonly edits: HeaderEdits | undefined }
  /** status: the check's own (a 4xx); undefined answers filter.denied's. */
  | { readonly kind: 'deny'; readonly code: string; readonly reason: string; readonly status: number | undefined }
  | { readonly kind: 'invalid'; readonly message: string };

export interface HeaderEdits {
  readonly set: Readonly<Record<string, string>>;
  readonly remove: readonly string[];
}

const CODE_RE = /^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$/;
const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9a-z-]{1,128}$/;
/** Headers that frame the request or belong to the proxy: a check may not set or remove them. */
const RESERVED = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-connection', 'expect', 'http2-settings']);
const MAX_EDITS = 32;
const MAX_VALUE = 8192;

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Reason text for the caller: one line, printable, bounded. */
function reasonText(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) return 'denied by a check';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
  return value.replace(/[\u0000-\u001f\u007f]+/g, ' ').slice(0, 200);
}

function headerEdits(value: unknown): HeaderEdits | string {
  if (!isRecord(value)) return 'headers must be an object {set, remove}';
  const set: Record<string, string> = {};
  const remove: string[] = [];
  const { set: rawSet, remove: rawRemove, ...rest } = value;
  if (Object.keys(rest).length > 0) return `headers has unknown fields: ${Object.keys(rest).slice(0, 3).join(', ')}`;
  if (rawSet !== undefined) {
    if (!isRecord(rawSet)) return 'headers.set must be an object of header name -> value';
    for (const [rawName, v] of Object.entries(rawSet)) {
      const name = rawName.toLowerCase();
      if (!HEADER_NAME_RE.test(name) || RESERVED.has(name)) return `headers.set: "${rawName.slice(0, 60)}" is not a header a check may set`;
      if (typeof v !== 'string' || v.length > MAX_VALUE || /[\r\n\0]/.test(v)) return `headers.set["${name}"]: expected a one-line string of at most ${MAX_VALUE} characters`;
      set[name] = v;
    }
  }
  if (rawRemove !== undefined) {
    if (!Array.isArray(rawRemove)) return 'headers.remove must be a list of header names';
    for (const rawName of rawRemove) {
      const name = typeof rawName === 'string' ? rawName.toLowerCase() : '';
      if (!HEADER_NAME_RE.test(name) || RESERVED.has(name)) return `headers.remove: ${JSON.stringify(rawName)?.slice(0, 60)} is not a header a check may remove`;
      remove.push(name);
    }
  }
  if (Object.keys(set).length + remove.length > MAX_EDITS) return `at most ${MAX_EDITS} header edits`;
  return { set, remove };
}

/** `{allow: true}`, `{deny: {code, reason}}`, `{headers: {set, remove}}` (with or without allow: true) -> a result. */
export function verdictOf(value: unknown): CheckResult {
  if (!isRecord(value)) return { kind: 'invalid', message: 'expected an object: {allow: true}, {deny: {code, reason}} or {headers: {set, remove}}' };
  if (value.deny !== undefined || value.allow === false) {
    const deny = isRecord(value.deny) ? value.deny : {};
    const code = typeof deny.code === 'string' && CODE_RE.test(deny.code) ? deny.code : 'denied';
    // A refusal is about the call: a 4xx. A 5xx would tell the caller's sidecar this endpoint failed.
    const status = deny.status;
    if (status !== undefined && (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 499)) {
      return { kind: 'invalid', message: `deny.status must be an HTTP status from 400 to 499, got ${JSON.stringify(status)?.slice(0, 20)}` };
    }
    return { kind: 'deny', code, reason: reasonText(deny.reason), status };
  }
  if (value.allow !== true && value.headers === undefined) return { kind: 'invalid', message: 'expected {allow: true}, {deny: {...}} or {headers: {...}}' };
  if (value.headers === undefined) return { kind: 'allow', edits: undefined };
  const edits = headerEdits(value.headers);
  return typeof edits === 'string' ? { kind: 'invalid', message: edits } : { kind: 'allow', edits };
}
