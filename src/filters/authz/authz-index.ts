import type { PathTrie } from '../../policy/path-trie.ts';
import { collectPath, createPathTrie, insertPath } from '../../policy/path-trie.ts';
import type { AuthzRequest } from './authz-request.ts';
import type { CompiledOperation, CompiledRule } from './authz-rules.ts';
import { ruleMatches } from './authz-rules.ts';

/*
 * The rules of one action, filed so that a call looks at the few rules that
 * could match it instead of scanning them all (ARCHITECTURE.md: no filter
 * scans every rule on the hot path).
 *
 * A rule with several `to` entries is filed once per entry (a "clause"). A
 * clause goes into the bucket of each of its methods (or the any-method
 * bucket), and inside a bucket into the first of:
 *   1. the path trie, when every path of the entry is exact, a prefix or a
 *      glob (filed under the glob's literal prefix);
 *   2. the principal map, when every `from` entry names exact peer principals;
 *   3. the residual list (wildcard-only rules: `*` paths, principal
 *      wildcards, conditions only).
 * (A handful of rules is simply tried in order: cheaper than any lookup.)
 * A lookup gathers the candidate clauses of the call's method and of the
 * any-method bucket, then runs each candidate's full predicate: the index only
 * narrows, it never decides. Among matching rules the lowest ordinal wins, so
 * the result is the one a scan in document order would give
 * (test/property/authz.property.test.ts checks that against `ruleMatches`).
 */

interface Clause {
  readonly rule: CompiledRule;
  readonly op: CompiledOperation | undefined;
}

function clauseMatches(clause: Clause, req: AuthzRequest): boolean {
  return (clause.op === undefined || clause.op.test(req)) && clause.rule.sourceAndConditions(req);
}

interface Bucket {
  readonly trie: PathTrie<Clause>;
  readonly principals: Map<string, Clause[]>;
  readonly residual: Clause[];
}

export interface RuleIndex {
  /** Rules filed. */
  readonly size: number;
  /** The matching rule with the lowest ordinal. */
  first(req: AuthzRequest): CompiledRule | undefined;
  /** Every matching rule, in ordinal order. */
  all(req: AuthzRequest): CompiledRule[];
}

const ANY_METHOD = '*';

/** Up to this many rules, trying each in order costs less than a lookup (bench/authz-decision.ts). */
const SCAN_UP_TO = 8;

function createRuleScan(rules: readonly CompiledRule[]): RuleIndex {
  return {
    size: rules.length,
    first(req) {
      for (const rule of rules) if (ruleMatches(rule, req)) return rule;
      return undefined;
    },
    all(req) {
      return rules.filter((rule) => ruleMatches(rule, req));
    },
  };
}

export function createRuleIndex(rules: readonly CompiledRule[], scanUpTo = SCAN_UP_TO): RuleIndex {
  if (rules.length <= scanUpTo) return createRuleScan([...rules].sort((a, b) => a.ordinal - b.ordinal));
  const buckets = new Map<string, Bucket>();
  const bucketOf = (method: string): Bucket => {
    let bucket = buckets.get(method);
    if (!bucket) {
      bucket = { trie: createPathTrie<Clause>(), principals: new Map(), residual: [] };
      buckets.set(method, bucket);
    }
    return bucket;
  };
  const file = (clause: Clause): void => {
    for (const method of clause.op?.methods ?? [ANY_METHOD]) {
      const bucket = bucketOf(method);
      const pathKeys = clause.op?.pathKeys;
      if (pathKeys) {
        for (const key of pathKeys) insertPath(bucket.trie, key, clause);
      } else if (clause.rule.principalKeys) {
        for (const principal of clause.rule.principalKeys) {
          let list = bucket.principals.get(principal);
          if (!list) bucket.principals.set(principal, (list = []));
          list.push(clause);
        }
      } else {
        bucket.residual.push(clause);
      }
    }
  };
  for (const rule of rules) {
    if (rule.operations) for (const op of rule.operations) file({ rule, op });
    else file({ rule, op: undefined });
  }
  const any = buckets.get(ANY_METHOD);

  // Reused across calls: lookups are synchronous, so one call never sees another's candidates.
  const scratch: Clause[][] = [];
  const collectBucket = (bucket: Bucket, req: AuthzRequest): void => {
    collectPath(bucket.trie, req.path, scratch);
    if (req.principal !== undefined && bucket.principals.size > 0) {
      const clauses = bucket.principals.get(req.principal);
      if (clauses) scratch.push(clauses);
    }
    if (bucket.residual.length > 0) scratch.push(bucket.residual);
  };
  const collect = (req: AuthzRequest): void => {
    scratch.length = 0;
    const own = buckets.get(req.method);
    if (own) collectBucket(own, req);
    if (any) collectBucket(any, req);
  };

  return {
    size: rules.length,
    first(req) {
      if (rules.length === 0) return undefined;
      collect(req);
      let best: CompiledRule | undefined;
      for (const clauses of scratch) {
        for (const clause of clauses) {
          if (best && clause.rule.ordinal >= best.ordinal) continue;
          if (clauseMatches(clause, req)) best = clause.rule;
        }
      }
      scratch.length = 0;
      return best;
    },
    all(req) {
      if (rules.length === 0) return [];
      collect(req);
      const found = new Map<number, CompiledRule>();
      for (const clauses of scratch) {
        for (const clause of clauses) {
          if (!found.has(clause.rule.ordinal) && clauseMatches(clause, req)) found.set(clause.rule.ordinal, clause.rule);
        }
      }
      scratch.length = 0;
      return [...found.values()].sort((a, b) => a.ordinal - b.ordinal);
    },
  };
}
