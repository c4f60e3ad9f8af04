/**
 * Bounds on what one policy document may contain. A document past a bound is
 * rejected alone with the field that crossed it, so a pathological document
 * (a million rules, a megabyte pattern, an alias bomb, a regex that backtracks
 * forever) costs the policy server and every sidecar a bounded amount of work
 * and never blocks the other documents.
 */
export interface PolicyLimits {
  /** Bytes of YAML/JSON text of one document. */
  readonly maxDocumentBytes: number;
  /** Bytes of one policy file (every document in it); a bigger file is rejected whole. */
  readonly maxFileBytes: number;
  /** Documents of one file, counted before it is parsed; a file with more is rejected whole. */
  readonly maxDocumentsPerFile: number;
  /** YAML values, keys and collections of one file, counted before it is parsed; a file with more is rejected whole. */
  readonly maxNodesPerFile: number;
  /** Entries of one mapping (checked before duplicate keys are looked for and the document is converted). */
  readonly maxKeysPerMapping: number;
  /** Entries of a rule list: rules, jwtRules, routes, versions. */
  readonly maxRules: number;
  /** Entries of any other list (principals, paths, CIDRs, values, keys, labels...). */
  readonly maxListValues: number;
  /** Characters of one match pattern: principal, path, host, header value, regex. */
  readonly maxPatternLength: number;
  /** Characters of any string of the document (inline JWKS moduli are the longest legitimate ones). */
  readonly maxStringLength: number;
  /** Nesting depth of mappings and lists (also stops self-referencing YAML anchors). */
  readonly maxDepth: number;
  /** YAML aliases expanded per document (the yaml package's guard against "billion laughs"). */
  readonly maxAliasCount: number;
  /** Regular expressions per document: each costs a safety analysis. */
  readonly maxRegexes: number;
  /** Error lines reported per document; the rest are counted in the last line. */
  readonly maxErrorsPerDocument: number;
}

export const DEFAULT_POLICY_LIMITS: PolicyLimits = Object.freeze({
  maxDocumentBytes: 256 * 1024,
  maxFileBytes: 8 * 1024 * 1024,
  maxDocumentsPerFile: 1000,
  maxNodesPerFile: 200_000,
  maxKeysPerMapping: 1000,
  maxRules: 1000,
  maxListValues: 256,
  maxPatternLength: 512,
  maxStringLength: 8192,
  maxDepth: 32,
  maxAliasCount: 100,
  maxRegexes: 64,
  maxErrorsPerDocument: 20,
});

/** Defaults with overrides; every override must be a positive integer. */
export function resolvePolicyLimits(overrides: Partial<PolicyLimits> = {}): PolicyLimits {
  const limits = { ...DEFAULT_POLICY_LIMITS };
  for (const [name, value] of Object.entries(overrides) as [keyof PolicyLimits, number | undefined][]) {
    if (value === undefined) continue;
    if (!(name in DEFAULT_POLICY_LIMITS)) throw new TypeError(`unknown policy limit "${name}"`);
    if (!Number.isSafeInteger(value) || value < 1) throw new TypeError(`policy limit ${name} must be a positive integer, got ${value}`);
    limits[name] = value;
  }
  return Object.freeze(limits);
}
