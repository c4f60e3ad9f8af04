import type { BodyRead, CallContext } from '../../core/call-context.ts';
import type { CallMatch } from '../../policy/call-match.ts';
import { compileCallMatch } from '../../policy/call-match.ts';
import type { CallMatchEntry, CallMatchIndex } from '../../policy/call-match-index.ts';
import { createCallMatchIndex } from '../../policy/call-match-index.ts';
import type { JsonSchemaCheck } from '../../policy/json-schema.ts';
import { createJsonSchemaCompiler } from '../../policy/json-schema.ts';
import { isKind } from '../../policy/typed-documents.ts';
import type { PolicyDocument } from '../../policy/types.ts';

/*
 * ValidationPolicy rules compiled once per snapshot, and the checks of one
 * rule. Checks are split by what they need: the head (headers, a declared
 * Content-Length), run synchronously and first; and the body (a JSON Schema,
 * or a size limit on a body of unknown length), which the filter reads only
 * when a matching rule has such a check.
 */

type ValidateCode = 'validate.body_too_large' | 'validate.content_type' | 'validate.missing_header' | 'validate.headers_too_large' | 'validate.schema' | 'validate.malformed_json' | 'filter.error';

export interface RuleFailure {
  readonly code: ValidateCode;
  readonly reason: string;
}

export interface CompiledValidationRule {
  /** `namespace/policy#rule`, in deny replies and logs. */
  readonly id: string;
  /** `namespace/policy` and the rule name: the metric labels. */
  readonly policy: string;
  readonly name: string;
  readonly shadow: boolean;
  readonly match: CallMatch;
  readonly maxBodyBytes: number | undefined;
  readonly contentTypes: readonly string[] | undefined;
  readonly requiredHeaders: readonly string[] | undefined;
  readonly maxHeaderBytes: number | undefined;
  readonly hasSchema: boolean;
  /** Undefined with a jsonSchema ajv could not compile: the rule then fails closed (filter.error). */
  readonly schema: JsonSchemaCheck | undefined;
}

interface CompileProblem {
  readonly rule: string;
  readonly error: string;
}

export interface CompiledValidation {
  /** Every rule, in document and rule order. */
  readonly rules: readonly CompiledValidationRule[];
  /** The same rules filed by method and path: the ones a call matches, in that order. */
  readonly index: CallMatchIndex<CompiledValidationRule>;
  readonly problems: readonly CompileProblem[];
}

/** Compiles every ValidationPolicy among the workload's documents (the sidecar already selected them). */
export function compileValidationRules(documents: readonly PolicyDocument[]): CompiledValidation {
  const entries: CallMatchEntry<CompiledValidationRule>[] = [];
  const problems: CompileProblem[] = [];
  let compile: ReturnType<typeof createJsonSchemaCompiler> | undefined;
  for (const doc of documents) {
    if (!isKind(doc, 'ValidationPolicy')) continue;
    const spec = doc.spec;
    const policy = `${doc.metadata.namespace}/${doc.metadata.name}`;
    for (const rule of spec.rules) {
      const id = `${policy}#${rule.name}`;
      let schema: JsonSchemaCheck | undefined;
      if (rule.jsonSchema) {
        try {
          compile ??= createJsonSchemaCompiler();
          schema = compile(rule.jsonSchema);
        } catch (err) {
          problems.push({ rule: id, error: (err as Error).message });
        }
      }
      const match = compileCallMatch(rule.match);
      const compiled: CompiledValidationRule = {
        id,
        policy,
        name: rule.name,
        shadow: spec.mode === 'shadow',
        match,
        maxBodyBytes: rule.maxBodyBytes,
        contentTypes: rule.contentTypes,
        requiredHeaders: rule.requiredHeaders,
        maxHeaderBytes: rule.maxHeaderBytes,
        hasSchema: rule.jsonSchema !== undefined,
        schema,
      };
      entries.push({ rule: compiled, match, spec: rule.match });
    }
  }
  return { rules: entries.map((e) => e.rule), index: createCallMatchIndex(entries), problems };
}

/** What the head checks know of the body without reading it. */
export interface BodyFacts {
  readonly present: boolean;
  readonly declaredLength: number | undefined;
  /** limits.maxBodyBuffer: the most the filter may hold in memory. */
  readonly bufferLimit: number;
}

/** The checks that need no body, in a fixed order so the same call always gets the same code. */
export function checkHead(rule: CompiledValidationRule, call: CallContext, body: BodyFacts, headerBytes: () => number): RuleFailure | undefined {
  if (rule.requiredHeaders) {
    for (const name of rule.requiredHeaders) {
      const value = call.headers[name];
      if (value === undefined || (typeof value === 'string' && value.trim() === '')) return { code: 'validate.missing_header', reason: `missing required header ${name}` };
    }
  }
  if (rule.maxHeaderBytes !== undefined) {
    const size = headerBytes();
    if (size > rule.maxHeaderBytes) return { code: 'validate.headers_too_large', reason: `request headers are ${size} bytes, more than ${rule.maxHeaderBytes}` };
  }
  // Content-Type describes content: a call without a body has none to check.
  if (rule.contentTypes && body.present) {
    const media = mediaTypeOf(call.headers['content-type']);
    if (!rule.contentTypes.some((accepted) => mediaMatches(accepted, media))) {
      return { code: 'validate.content_type', reason: `content type ${media === '' ? '(none)' : JSON.stringify(media.slice(0, 64))} is not accepted` };
    }
  }
  if (rule.maxBodyBytes !== undefined && body.declaredLength !== undefined && body.declaredLength > rule.maxBodyBytes) {
    return { code: 'validate.body_too_large', reason: `request body of ${body.declaredLength} bytes exceeds ${rule.maxBodyBytes}` };
  }
  if (rule.hasSchema && !call.isGrpc) {
    if (!body.present) return { code: 'validate.malformed_json', reason: 'expected a JSON body' };
    if (body.declaredLength !== undefined && body.declaredLength > body.bufferLimit) return overBuffer(body.bufferLimit);
  }
  return undefined;
}

/**
 * How many bytes of the body this rule must see, or undefined when its head
 * checks were enough. gRPC bodies are binary frames and often long-lived
 * streams: never buffered.
 */
export function bodyNeed(rule: CompiledValidationRule, call: CallContext, body: BodyFacts): number | undefined {
  if (call.isGrpc || !body.present) return undefined;
  const sizeUnknown = rule.maxBodyBytes !== undefined && body.declaredLength === undefined;
  if (!rule.hasSchema && !sizeUnknown) return undefined;
  return Math.min(rule.maxBodyBytes ?? Infinity, body.bufferLimit);
}

/** A parsed body, shared by the rules of one call: parsed at most once. */
export type ParsedJson = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly reason: string };

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Deepest JSON nesting a body may have. JSON.parse takes any depth, but a
 * recursive schema ($ref to itself) is checked by recursion: 10 000 levels
 * overflowed the stack, answered 500 filter.error as if the sidecar had failed.
 */
const MAX_JSON_DEPTH = 1000;

const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Whether `bytes` opens more than `max` objects or arrays inside each other (strings skipped); one pass, no allocation. */
function nestsDeeperThan(bytes: Buffer, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (inString) {
      if (b === BACKSLASH) i++;
      else if (b === QUOTE) inString = false;
    } else if (b === QUOTE) inString = true;
    else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
      if (++depth > max) return true;
    } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) depth--;
  }
  return false;
}

export function parseJsonBody(bytes: Buffer): ParsedJson {
  if (nestsDeeperThan(bytes, MAX_JSON_DEPTH)) return { ok: false, reason: `request body nests JSON deeper than ${MAX_JSON_DEPTH} levels` };
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    return { ok: false, reason: 'request body is not valid UTF-8' };
  }
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    // V8's message quotes the input: never sent back to the caller.
    return { ok: false, reason: 'request body is not valid JSON' };
  }
}

/** The checks on the body as read (`read` covers at least `bodyNeed(rule)` bytes). */
export function checkBody(rule: CompiledValidationRule, read: BodyRead, body: BodyFacts, json: () => ParsedJson): RuleFailure | undefined {
  if (read.kind === 'failed' || read.kind === 'over_budget') return undefined; // the filter answers for the call itself
  const ownLimit = Math.min(rule.maxBodyBytes ?? Infinity, body.bufferLimit);
  const size = read.kind === 'complete' ? read.bytes.length : Infinity;
  if (size > ownLimit) {
    return rule.maxBodyBytes !== undefined && rule.maxBodyBytes <= body.bufferLimit
      ? { code: 'validate.body_too_large', reason: `request body exceeds ${rule.maxBodyBytes} bytes` }
      : overBuffer(body.bufferLimit);
  }
  if (!rule.hasSchema || read.kind !== 'complete') return undefined;
  if (!rule.schema) return { code: 'filter.error', reason: 'the JSON Schema of this rule could not be compiled' };
  if (read.bytes.length === 0) return { code: 'validate.malformed_json', reason: 'expected a JSON body' };
  const parsed = json();
  if (!parsed.ok) return { code: 'validate.malformed_json', reason: parsed.reason };
  const violation = rule.schema(parsed.value);
  return violation ? { code: 'validate.schema', reason: `JSON body at ${violation.pointer}: ${violation.message}` } : undefined;
}

function overBuffer(limit: number): RuleFailure {
  return { code: 'validate.body_too_large', reason: `request body exceeds the ${limit} bytes the sidecar buffers for validation (limits.maxBodyBuffer)` };
}

/** `type/subtype` of a Content-Type, lower-cased, parameters dropped; '' when absent. */
function mediaTypeOf(value: string | undefined): string {
  if (value === undefined) return '';
  const semi = value.indexOf(';');
  return (semi < 0 ? value : value.slice(0, semi)).trim().toLowerCase();
}

/** `accepted` is lower-cased by the policy validator: a `type/subtype`, a `type/` wildcard, or the any-type wildcard. */
function mediaMatches(accepted: string, media: string): boolean {
  if (media === '') return false;
  if (accepted === '*/*' || accepted === media) return true;
  return accepted.endsWith('/*') && media.startsWith(accepted.slice(0, -1));
}

/** The request head's size as `name: value\r\n` lines, pseudo-headers left out (the same count for HTTP/1.1 and HTTP/2). */
export function headerBytesOf(headers: CallContext['headers']): number {
  let total = 0;
  for (const name in headers) {
    if (name.charCodeAt(0) === 58 /* ':' */) continue;
    const value = headers[name];
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) total += name.length + Buffer.byteLength(v) + 4;
  }
  return total;
}
