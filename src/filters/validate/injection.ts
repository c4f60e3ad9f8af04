import type { CallContext } from '../../core/call-context.ts';
import { normalizeValue } from './injection-decode.ts';
import type { InjectionClass } from './injection-signatures.ts';
import { createMatchScratch, matchSignatures, SIGNATURE_WEIGHTS } from './injection-signatures.ts';

/*
 * Injection detection for one call and one rule: the values a rule inspects
 * (the path, each query parameter's name and value, the headers it names,
 * each string and key of a JSON body, each field of a form body, a text body
 * whole) are decoded and matched against the signatures; each signature that
 * matches adds its weight once per call, CRS-style, and the call's score is
 * compared with the rule's threshold. The bytes inspected per call are
 * capped: past the cap the rest is not read and the call fails closed.
 */

export type InjectionMode = 'block' | 'log' | 'shadow';

export interface InjectionSettings {
  /** block: refuse at the threshold (shadow when the document is); log: log and count only; shadow: as a shadow document. */
  readonly mode: InjectionMode;
  readonly threshold: number;
  readonly classes: ReadonlySet<InjectionClass>;
  readonly path: boolean;
  readonly query: boolean;
  readonly body: boolean;
  /** Lower-case header names; `cookie` is read as name=value pairs. */
  readonly headers: readonly string[];
  readonly maxInspectBytes: number;
}

export interface InjectionFinding {
  readonly score: number;
  /** The class with the most weight among the matches. */
  readonly cls: InjectionClass;
  /** Matched signature ids, heaviest first. */
  readonly signatures: readonly string[];
  /** Where the heaviest match was: `path`, `query:NAME`, `header:NAME`, `body:/json/pointer`, `body`. */
  readonly location: string;
  /** The start of the value it was found in, cut: never the whole payload. */
  readonly sample: string;
}

/** A rule's `injection` as the policy schema outputs it. */
interface InjectionSpec {
  readonly mode: InjectionMode;
  readonly threshold: number;
  readonly classes: readonly InjectionClass[];
  readonly inspect: readonly ('path' | 'query' | 'body')[];
  readonly headers: readonly string[];
  readonly maxInspectBytes: number;
}

export function compileInjection(spec: InjectionSpec): InjectionSettings {
  return {
    mode: spec.mode,
    threshold: spec.threshold,
    classes: new Set(spec.classes),
    path: spec.inspect.includes('path'),
    query: spec.inspect.includes('query'),
    body: spec.inspect.includes('body'),
    headers: spec.headers.map((h) => h.toLowerCase()),
    maxInspectBytes: spec.maxInspectBytes,
  };
}

/** What a scan concluded: nothing, a score (at or above the threshold or not), or more text than the cap. */
export type InjectionVerdict = { readonly kind: 'clean' } | { readonly kind: 'scored'; readonly finding: InjectionFinding } | { readonly kind: 'over_limit'; readonly inspected: number };

const SAMPLE_CHARS = 48;
const LOCATION_CHARS = 96;
/** Repeated values (an enum, a name in every item) are matched once per call: values this short, this many. */
const MEMO_CHARS = 256;
const MEMO_VALUES = 4096;

/** A value with nothing but letters, digits, `_ . @ -`: no signature can match it, so it is not decoded. */
const PLAIN = /^[\w.@-]*$/;

/** The regexes of this file: each must pass the ReDoS check (tested). */
export const INSPECT_REGEXES: readonly RegExp[] = [PLAIN];

/** The running score of one call against one rule's settings. */
export class InjectionScan {
  readonly #settings: InjectionSettings;
  /** Stop at the threshold (the sidecar), or collect every match (policy explain). */
  readonly #exhaustive: boolean;
  readonly #matched = new Set<string>();
  #scratch: ReturnType<typeof createMatchScratch> | undefined; // made for the first value that needs matching
  /** Values already matched in this call (a signature counts once per call, so a repeat adds nothing). */
  readonly #seen = new Set<string>();
  #score = 0;
  #inspected = 0;
  #over = false;
  #bestWeight = 0;
  #location = '';
  #sample = '';

  constructor(settings: InjectionSettings, exhaustive = false) {
    this.#settings = settings;
    this.#exhaustive = exhaustive;
  }

  /** Whether more values are worth scanning: not decided yet, and under the cap. */
  get open(): boolean {
    return !this.#over && (this.#exhaustive || this.#score < this.#settings.threshold);
  }

  /** Inspects one value; `location` is called only when the value matched (it may build a JSON pointer). */
  value(raw: string, location: string | (() => string), plus = false): void {
    if (!this.open) return;
    this.#inspected += raw.length;
    if (this.#inspected > this.#settings.maxInspectBytes) {
      this.#over = true;
      return;
    }
    if (raw.length === 0) return;
    // Repeats first (keys and enums recur in every item of a list), then values no signature can match.
    if (raw.length <= MEMO_CHARS) {
      const memo = plus ? `+${raw}` : raw; // `+` decodes to a space in a query: another value
      if (this.#seen.has(memo)) return;
      if (this.#seen.size < MEMO_VALUES) this.#seen.add(memo);
    }
    if (PLAIN.test(raw)) return;
    const text = normalizeValue(raw, plus);
    let heaviest = 0;
    matchSignatures(text, this.#settings.classes, (this.#scratch ??= createMatchScratch()), (id) => {
      if (this.#matched.has(id)) return;
      this.#matched.add(id);
      const weight = SIGNATURE_WEIGHTS[id] ?? 0;
      this.#score += weight;
      heaviest = Math.max(heaviest, weight);
    });
    if (heaviest > this.#bestWeight) {
      this.#bestWeight = heaviest;
      this.#location = (typeof location === 'string' ? location : location()).slice(0, LOCATION_CHARS);
      this.#sample = raw.length > SAMPLE_CHARS ? `${raw.slice(0, SAMPLE_CHARS)}…` : raw;
    }
  }

  /** The name=value pairs of a query string or a form body, each name and value on its own. */
  pairs(raw: string, where: string): void {
    let from = 0;
    while (from <= raw.length && this.open) {
      let to = raw.indexOf('&', from);
      if (to < 0) to = raw.length;
      const eq = raw.indexOf('=', from);
      const cut = eq >= 0 && eq < to ? eq : to;
      const name = raw.slice(from, cut);
      this.value(name, () => `${where}:${name}`, true);
      if (cut < to) this.value(raw.slice(cut + 1, to), () => `${where}:${name}`, true);
      from = to + 1;
    }
  }

  /** Every string and key of a parsed JSON value. */
  json(value: unknown): void {
    const path: string[] = [];
    const pointer = () => `body:/${path.map((p) => p.replaceAll('~', '~0').replaceAll('/', '~1')).join('/')}`;
    const walk = (node: unknown): void => {
      if (!this.open) return;
      if (typeof node === 'string') {
        this.value(node, pointer);
      } else if (Array.isArray(node)) {
        for (let i = 0; i < node.length && this.open; i++) {
          path.push(String(i));
          walk(node[i]);
          path.pop();
        }
      } else if (node !== null && typeof node === 'object') {
        // JSON.parse makes plain objects: for-in sees their own keys only, without Object.keys' array.
        for (const key in node) {
          path.push(key);
          this.value(key, pointer);
          walk((node as Record<string, unknown>)[key]);
          path.pop();
          if (!this.open) return;
        }
      }
    };
    walk(value);
  }

  /** The path, query and headers of a call, as the settings select them. */
  head(call: Pick<CallContext, 'path' | 'query' | 'headers'>): void {
    const s = this.#settings;
    if (s.path) this.value(call.path, 'path');
    if (s.query && call.query !== '') this.pairs(call.query, 'query');
    for (const name of s.headers) {
      const raw = call.headers[name];
      if (raw === undefined) continue;
      for (const value of Array.isArray(raw) ? raw : [raw]) {
        if (name === 'cookie') this.#cookies(value);
        else this.value(value, `header:${name}`);
      }
    }
  }

  #cookies(header: string): void {
    for (const pair of header.split(';')) {
      const eq = pair.indexOf('=');
      const name = (eq < 0 ? pair : pair.slice(0, eq)).trim();
      this.value(eq < 0 ? pair : pair.slice(eq + 1), `header:cookie:${name}`);
    }
  }

  get verdict(): InjectionVerdict {
    if (this.#over) return { kind: 'over_limit', inspected: this.#inspected };
    if (this.#score === 0) return { kind: 'clean' };
    const signatures = [...this.#matched].sort((a, b) => (SIGNATURE_WEIGHTS[b] ?? 0) - (SIGNATURE_WEIGHTS[a] ?? 0));
    const byClass = new Map<InjectionClass, number>();
    for (const id of signatures) {
      const cls = id.slice(0, id.indexOf('.')) as InjectionClass;
      byClass.set(cls, (byClass.get(cls) ?? 0) + (SIGNATURE_WEIGHTS[id] ?? 0));
    }
    let cls = signatures[0]!.slice(0, signatures[0]!.indexOf('.')) as InjectionClass;
    for (const [c, w] of byClass) if (w > (byClass.get(cls) ?? 0)) cls = c;
    return { kind: 'scored', finding: { score: this.#score, cls, signatures, location: this.#location, sample: this.#sample } };
  }

  get threshold(): number {
    return this.#settings.threshold;
  }

  get maxInspectBytes(): number {
    return this.#settings.maxInspectBytes;
  }
}

/**
 * The failure a scan amounts to, once its score reaches the threshold or it
 * ran past the cap; its mode says whether it refuses. 403: the request is well
 * formed and was understood, and policy refuses what it carries (as WAFs and
 * CRS answer); a 400 would tell the caller to fix a request that is an attack.
 */
export function injectionFailure(
  scan: InjectionScan,
  mode: InjectionMode,
): { code: 'validate.injection' | 'validate.body_too_large'; reason: string; mode?: 'log' | 'shadow'; detail: Record<string, unknown> } | undefined {
  const verdict = scan.verdict;
  const own = mode === 'block' ? {} : { mode };
  if (verdict.kind === 'over_limit') {
    return {
      code: 'validate.body_too_large',
      reason: `the call carries more than ${scan.maxInspectBytes} bytes of text to inspect for injection (maxInspectBytes): refused unread`,
      ...own,
      detail: { injection_inspected: verdict.inspected },
    };
  }
  if (verdict.kind !== 'scored' || verdict.finding.score < scan.threshold) return undefined;
  const f = verdict.finding;
  return {
    code: 'validate.injection',
    reason: `the request looks like an injection attack (${f.cls}, score ${f.score}, threshold ${scan.threshold})`,
    ...own,
    detail: { injection_class: f.cls, injection_score: f.score, injection_signatures: f.signatures, injection_location: f.location, injection_sample: f.sample },
  };
}
