import type { Node as YamlNode } from 'yaml';
import { CST, isMap, isScalar, isSeq, Lexer, LineCounter, parseAllDocuments } from 'yaml';

/*
 * YAML text -> plain values, with the work bounded before it is done. The
 * yaml package is linear in the size of its input except where it checks
 * that keys are unique (every key against every earlier key of its mapping:
 * 160k keys took minutes), so that check is ours, with a Set; and a lexer
 * pass, about a quarter of the cost of a parse and stopped as soon as a limit
 * is crossed, counts nodes and documents before anything is built. Every
 * role's config file and every policy file goes through here.
 */

export interface YamlBounds {
  /** Scalars, aliases and [ ] / { } collections of the whole text, counted before parsing. */
  readonly maxNodes: number;
  /** Documents (`---`) of the text, counted before parsing. */
  readonly maxDocuments: number;
  /** Entries of one mapping. */
  readonly maxKeysPerMapping: number;
  /** Aliases expanded while one document is converted ("billion laughs"). */
  readonly maxAliasCount: number;
}

/** Nesting of [ ] and { } the lexer pass lets through: far above any real file, well below a stack overflow. */
const MAX_FLOW_DEPTH = 1000;

interface YamlProblem {
  /** Keys and indexes down to the node; empty for a syntax error. */
  readonly path: readonly (string | number)[];
  /** 1-based position in the text; 0 when the problem is the whole document's. */
  readonly line: number;
  readonly column: number;
  readonly reason: string;
  /** A YAML syntax error (or alias expansion failure), as opposed to a problem of one node. */
  readonly syntax: boolean;
}

interface YamlDocument {
  /** Position of the document in the text, from 0. */
  readonly index: number;
  /** Character offsets of the document in the text. */
  readonly start: number;
  readonly end: number;
  /** The plain value (objects, arrays, scalars); undefined when there are problems, null for an empty document. */
  readonly value: unknown;
  readonly problems: readonly YamlProblem[];
}

export type YamlParseResult =
  | { readonly ok: true; readonly documents: readonly YamlDocument[] }
  /** A limit the whole text crossed: nothing of it was parsed. */
  | { readonly ok: false; readonly reason: string };

/** Lexer tokens that neither start a document nor belong to one's content. */
const NOT_CONTENT = new Set<string | null>(['doc-mode', 'doc-start', 'doc-end', 'newline', 'space', 'comment', 'byte-order-mark', 'directive', 'directive-line']);

/** The first limit the text crosses, found by a lexer pass that stops there; undefined when within. */
function scanYaml(text: string, bounds: Pick<YamlBounds, 'maxNodes' | 'maxDocuments'>): string | undefined {
  let nodes = 0;
  let documents = 0;
  // A document starts at `---`, or at the first content after the start of the text or a `...`.
  let inDocument = false;
  let flowDepth = 0;
  for (const token of new Lexer().lex(text)) {
    const type = CST.tokenType(token);
    if (type === 'doc-start' || (!inDocument && !NOT_CONTENT.has(type))) {
      inDocument = true;
      if (++documents > bounds.maxDocuments) return `too many documents: at most ${bounds.maxDocuments} in one file`;
    }
    switch (type) {
      case 'doc-mode':
      case 'doc-end':
        inDocument = false;
        break;
      case 'scalar':
      case 'alias':
        nodes++;
        break;
      case 'flow-map-start':
      case 'flow-seq-start':
        nodes++;
        if (++flowDepth > MAX_FLOW_DEPTH) return `nested too deeply: more than ${MAX_FLOW_DEPTH} levels of [ ] or { }`;
        break;
      case 'flow-map-end':
      case 'flow-seq-end':
        flowDepth = Math.max(0, flowDepth - 1);
        break;
      default:
        break;
    }
    if (nodes > bounds.maxNodes) return `too many YAML nodes: at most ${bounds.maxNodes} values, keys and collections in one file`;
  }
  return undefined;
}

export interface ParseYamlOptions {
  /** The yaml package's strict mode (e.g. refuses a key longer than 1024 characters without `?`). */
  readonly strict?: boolean;
  /** Problems reported per document; the rest are dropped (the caller says how many it shows). */
  readonly maxProblems?: number;
}

/**
 * Every document of `text`, each with its value or its problems. One
 * document's problems never hide another's value; only a crossed `scanYaml`
 * bound fails the whole text.
 */
export function parseYaml(text: string, bounds: YamlBounds, options: ParseYamlOptions = {}): YamlParseResult {
  const crossed = scanYaml(text, bounds);
  if (crossed) return { ok: false, reason: crossed };
  const maxProblems = options.maxProblems ?? 20;
  const lineCounter = new LineCounter();
  const at = (offset: number) => {
    const pos = lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col };
  };
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false, uniqueKeys: false, strict: options.strict ?? false });
  return {
    ok: true,
    documents: Array.from(docs, (doc, index) => {
      const [start, , end] = doc.range;
      if (doc.errors.length > 0) {
        const problems = doc.errors.slice(0, maxProblems).map((e) => ({ path: [], ...at(e.pos[0]), reason: e.message.split('\n')[0]!, syntax: true }));
        return { index, start, end, value: undefined, problems };
      }
      const problems = structureProblems(doc.contents, bounds, maxProblems, at);
      if (problems.length > 0) return { index, start, end, value: undefined, problems };
      try {
        return { index, start, end, value: doc.toJS({ maxAliasCount: bounds.maxAliasCount }) as unknown, problems: [] };
      } catch (err) {
        // The yaml package's guard against "billion laughs": anchors whose aliases expand exponentially.
        const reason = `${(err as Error).message.split('\n')[0]} (at most ${bounds.maxAliasCount} alias expansions)`;
        return { index, start, end, value: undefined, problems: [{ path: [], line: 0, column: 0, reason, syntax: false }] };
      }
    }),
  };
}

interface Visit {
  readonly node: unknown;
  readonly parent: Visit | undefined;
  readonly key: string | number | undefined;
}

function pathOf(visit: Visit): (string | number)[] {
  const path: (string | number)[] = [];
  for (let v: Visit | undefined = visit; v?.key !== undefined; v = v.parent) path.push(v.key);
  return path.reverse();
}

/**
 * Mappings with too many keys, duplicate keys (linear, unlike the yaml
 * package's own check), keys that are not scalars and numbers out of range,
 * in document order. Iterative with parent links: deep nesting costs neither
 * stack nor a path copy per node.
 */
function structureProblems(root: unknown, bounds: YamlBounds, maxProblems: number, at: (offset: number) => { line: number; column: number }): YamlProblem[] {
  const problems: YamlProblem[] = [];
  const report = (visit: Visit, node: YamlNode | undefined, reason: string) => problems.push({ path: pathOf(visit), ...at(node?.range?.[0] ?? 0), reason, syntax: false });
  const stack: Visit[] = [{ node: root, parent: undefined, key: undefined }];
  while (stack.length > 0 && problems.length < maxProblems) {
    const visit = stack.pop()!;
    const { node } = visit;
    const children: Visit[] = [];
    if (isMap(node)) {
      if (node.items.length > bounds.maxKeysPerMapping) {
        report(visit, node, `too many keys: at most ${bounds.maxKeysPerMapping} in one mapping (got ${node.items.length})`);
        continue;
      }
      const seen = new Map<string, number>();
      for (const pair of node.items) {
        const key = pair.key as YamlNode | null;
        let name: string;
        if (key === null || (isScalar(key) && key.value === null)) name = '';
        else if (isScalar(key)) name = String(key.value);
        else {
          report(visit, key, 'a mapping key must be a plain value, not a list, mapping or alias');
          continue;
        }
        const first = seen.get(name);
        const child: Visit = { node: pair.value, parent: visit, key: name };
        if (first !== undefined) {
          report(child, key ?? undefined, `Map keys must be unique (${JSON.stringify(name)} is also on line ${first})`);
          continue;
        }
        seen.set(name, at(key?.range?.[0] ?? 0).line);
        children.push(child);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => children.push({ node: item, parent: visit, key: i }));
    } else if (isScalar(node) && typeof node.value === 'number' && !Number.isFinite(node.value)) {
      report(visit, node, `not a finite number: ${node.source ?? String(node.value)}`);
    }
    // Aliases are left to toJS, which expands and counts them.
    // Reversed onto the stack, so problems come out in document order.
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]!);
  }
  return problems.sort((a, b) => a.line - b.line || a.column - b.column).slice(0, maxProblems);
}
