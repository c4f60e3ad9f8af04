import { createRequire } from 'node:module';
import type { isSafe as IsSafe } from 'redos-detector';

/*
 * Why redos-detector (tjenkinson/redos-detector) and not the alternatives:
 *  - safe-regex2 (fastify) only bounds star height. It is tiny and fast, but its
 *    own README warns of false negatives, and we confirmed them: `(a|a)*$` and
 *    `.*.*=.*` pass it, and both backtrack without bound.
 *  - recheck is the most thorough (automaton + fuzzing), but it runs its
 *    analysis in worker threads through platform binaries or a large Scala.js
 *    bundle, and its fuzzing is time-driven. Every sidecar re-validates each
 *    document it receives, so the check must be cheap, in-process and the same
 *    on every machine.
 *  - redos-detector is pure JavaScript, synchronous, follows ECMA-262 (V8's
 *    semantics, which is what runs the pattern), and its work is bounded by a
 *    step count: the same pattern gets the same verdict on every replica and
 *    every sidecar. It finds ambiguity (two paths matching the same text), which
 *    covers nested quantifiers, overlapping alternations and adjacent `.*`s.
 *
 * A pattern whose analysis reaches the step budget is rejected ("too complex to
 * prove safe"): fail closed, because the analysis of a pathological pattern is
 * itself the expensive case. The wall-clock timeout is a guard for slow
 * machines only; the step budget decides first in practice (a few hundred ms).
 */

export interface RegexSafetyOptions {
  /** Analysis steps before a pattern counts as too complex (deterministic). */
  readonly maxSteps?: number;
  /** Largest number of ways one input may match; beyond it the pattern is unsafe. */
  readonly maxScore?: number;
  /** Wall-clock guard per pattern, in ms. */
  readonly timeoutMs?: number;
  /** Verdicts remembered (the same routes arrive in every snapshot). */
  readonly cacheSize?: number;
  /** The analyser; default redos-detector's, loaded on the first pattern (tests count its calls). */
  readonly isSafe?: typeof IsSafe;
}

export interface RegexSafetyChecker {
  /**
   * undefined when `source` compiles with `flags` and cannot backtrack
   * catastrophically; otherwise the reason, one line. Pass the pattern as it
   * will run (e.g. already wrapped in `^(?:...)$` when the matcher anchors it).
   */
  check(source: string, flags?: string): string | undefined;
}

export const REGEX_UNSAFE_REASON = 'regex can backtrack catastrophically (ambiguous repetition such as (a+)+ or (a|a)*); rewrite it so each character can match only one way';
export const REGEX_TOO_COMPLEX_REASON = 'regex is too complex to prove safe against catastrophic backtracking; simplify it';

export function createRegexSafetyChecker(options: RegexSafetyOptions = {}): RegexSafetyChecker {
  const maxSteps = options.maxSteps ?? 1000;
  const maxScore = options.maxScore ?? 10;
  const timeout = options.timeoutMs ?? 2000;
  const cacheSize = options.cacheSize ?? 4096;
  const cache = new Map<string, string | undefined>();
  // Loaded on the first pattern, not with the config schemas: most sidecars' configs hold no regex at all.
  let isSafe = options.isSafe;

  const analyse = (source: string, flags: string): string | undefined => {
    let regex: RegExp;
    try {
      regex = new RegExp(source, flags);
    } catch (err) {
      return `not a valid regular expression (${(err as Error).message.replace(/^Invalid regular expression: /, '')})`;
    }
    isSafe ??= (createRequire(import.meta.url)('redos-detector') as { isSafe: typeof IsSafe }).isSafe;
    let result: ReturnType<typeof IsSafe>;
    try {
      result = isSafe(regex, { maxSteps, maxScore, timeout });
    } catch (err) {
      // Syntax the analyser cannot model even after downgrading: unprovable, so refused.
      return `${REGEX_TOO_COMPLEX_REASON} (${(err as Error).message})`;
    }
    if (result.safe) return undefined;
    if (result.error === 'hitMaxSteps' || result.error === 'timedOut') return REGEX_TOO_COMPLEX_REASON;
    return REGEX_UNSAFE_REASON;
  };

  return {
    check(source, flags = '') {
      const key = `${flags}/${source}`;
      if (cache.has(key)) return cache.get(key);
      const verdict = analyse(source, flags);
      if (cache.size >= cacheSize) cache.delete(cache.keys().next().value!);
      cache.set(key, verdict);
      return verdict;
    },
  };
}
