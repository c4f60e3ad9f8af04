/**
 * Types for checks of your own (meshgate `Filter` documents):
 *
 *   import type { Call, Verdict } from 'meshgate/filter';
 *   export default function check(call: Call, config: { prefix: string }): Verdict {
 *     return call.path.startsWith(config.prefix) ? { allow: true } : { deny: { code: 'wrong_prefix', reason: 'not here' } };
 *   }
 *
 * The check runs in a QuickJS sandbox inside the sidecar: the language's
 * built-ins (JSON, Math, Date, RegExp, Map, Promise, typed arrays...), the
 * global `meshgate` below, and nothing else: no require, import of other
 * modules, process, fetch, timers or console. `import type` lines are erased
 * before it runs.
 */

/** What the host computes for a check: pure functions of their arguments, and one HMAC under a key only the sidecar holds. */
export interface MeshgateHost {
  /** HMAC-SHA256 of `message` (UTF-8) under the key given in hex; lower-case hex. Key up to 1024 hex characters, message up to 64 KiB. */
  hmacSha256(keyHex: string, message: string): string;
  /**
   * HMAC-SHA256 of `message` (UTF-8) under the key in file `name` of the
   * sidecar's userFilters.secretsDir, lower-case hex. The document must list
   * `name` in spec.secrets; the key never enters the sandbox. Throws when the
   * name is not listed or the file cannot be read (the failure mode applies).
   */
  hmacSha256Secret(name: string, message: string): string;
  /** SHA-256 of `message` (UTF-8), lower-case hex. */
  sha256(message: string): string;
}

declare global {
  /** The host's capabilities, the only global a check gets beyond the language's own. */
  const meshgate: MeshgateHost;
}

/** The read-only view of one inbound call a check gets (frozen: assigning to it throws). */
export interface Call {
  readonly method: string;
  /** The normalized path, without the query ("//" merged, "." and ".." resolved, percent-decoding of unreserved characters). */
  readonly path: string;
  /** The raw query string without "?" ('' for none). */
  readonly query: string;
  /** Request headers, lower-case names; a repeated header's values joined with ", ". */
  readonly headers: Readonly<Record<string, string>>;
  readonly source: {
    /** The caller's address (the connection's, or x-forwarded-for from a trusted proxy). */
    readonly address: string;
    /** The caller's SPIFFE ID from its mTLS certificate, null without one. */
    readonly principal: string | null;
  };
  /** This workload. */
  readonly destination: { readonly service: string; readonly namespace: string };
  /** The verified credential (RequestAuthentication: a JWT or an introspected token), null when the call has none. */
  readonly auth: {
    /** `issuer/subject`. */
    readonly principal: string;
    readonly issuer: string;
    readonly subject: string;
    readonly claims: Readonly<Record<string, unknown>>;
  } | null;
  /**
   * The route the caller's sidecar matched for this call (its `name`, or
   * `service#index` for an unnamed one) and the endpoint labels of the version
   * it sent the call to (the backend's subset, e.g. `{ version: 'v2' }`; empty
   * without one). Null when the caller has no verified mesh identity: only a
   * peer sidecar's word is taken.
   */
  readonly route: { readonly name: string; readonly labels: Readonly<Record<string, string>> } | null;
}

/** Changes to the request the app receives (applied only when the call goes through). */
export interface HeaderEdits {
  /** Header name -> value (one line); replaces any value the caller sent. */
  readonly set?: Readonly<Record<string, string>>;
  /** Header names to drop. Framing headers (host, content-length, transfer-encoding, connection...) cannot be set or removed. */
  readonly remove?: readonly string[];
}

export interface Deny {
  /**
   * HTTP status of the answer, 400 to 499 (default 403); anything else is a
   * failing check (the document's failure mode). The reason code stays
   * `filter.denied` (`x-meshgate-reason`), which callers and alerts key on;
   * gRPC callers get PERMISSION_DENIED whatever the status.
   */
  readonly status?: number;
  /** Your code, in the deny body's `rule` (`namespace/name#code`), the log and the metrics: letters, digits, "-", "_", "." (at most 63). */
  readonly code?: string;
  /** One line for the caller (at most 200 characters; never put a secret in it). */
  readonly reason?: string;
}

/** What a check returns (or resolves to: it may be async, within its CPU budget). */
export type Verdict =
  | { readonly allow: true; readonly headers?: HeaderEdits }
  | { readonly headers: HeaderEdits }
  | { readonly allow?: false; readonly deny: Deny };

/** The shape of the module's default export (or of an export named `check`). */
export type Check<Config = Readonly<Record<string, unknown>>> = (call: Call, config: Config) => Verdict | Promise<Verdict>;
