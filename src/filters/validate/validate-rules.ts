import { isUtf8 } from 'node:buffer';
import type { BodyRead, CallContext } from '../../core/call-context.ts';
import type { CallMatch } from '../../policy/call-match.ts';
import { compileCallMatch } from '../../policy/call-match.ts';
import type { CallMatchEntry, CallMatchIndex } from '../../policy/call-match-index.ts';
import { createCallMatchIndex } from '../../policy/call-match-index.ts';
import type { JsonSchemaCheck, JsonSchemaCompiler } from '../../policy/json-schema.ts';
import { createJsonSchemaCompiler } from '../../policy/json-schema.ts';
import { DEFAULT_JSON_LIMITS } from '../../policy/kinds/validation-policy.ts';
import { isKind } from '../../policy/typed-documents.ts';
import type { PolicyDocument } from '../../policy/types.ts';
import type { InjectionSettings } from './injection.ts';
import { compileInjection } from './injection.ts';
import type { JsonLimits, JsonScan, SafeJsonCode } from './safe-json.ts';
import { checkJsonScan, scanJson } from './safe-json.ts';

/*
 * ValidationPolicy rules compiled once per snapshot, and the checks of one
 * rule. Checks are split by what they need: the head (headers, a declared
 * Content-Length), run synchronously and first; and the body (a JSON Schema,
 * safe-JSON limits, injection detection in the body, or a size limit on a
 * body of unknown length), which the filter reads only when a matching rule
 * has such a check. A JSON body a rule reads is checked in this order: safe
 * JSON (safe-json.ts: UTF-8, duplicate keys, depth, members, numbers) on the
 * bytes, then parsed, then injection, then the schema: a JSON bomb is refused
 * before the parser or the schema runs.
 */

type ValidateCode =
  | 'validate.body_too_large'
  | 'validate.content_type'
  | 'validate.missing_header'
  | 'validate.headers_too_large'
  | 'validate.schema'
  | 'validate.malformed_json'
  | 'validate.injection'
  | SafeJsonCode
  | 'filter.error';

export interface RuleFailure {
  readonly code: ValidateCode;
  readonly reason: string;
  /** A check with its own mode (injection `log` or `shadow`): it does not refuse, and the rule's other checks still run. */
  readonly mode?: 'log' | 'shadow';
  /** Extra fields for the log line (never the payload: cut samples only). */
  readonly detail?: Readonly<Record<string, unknown>>;
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
  /** Safe-JSON limits for a JSON body the rule reads (the rule's `json`, or the defaults). */
  readonly json: JsonLimits;
  /** The rule has a `json` field: it reads a JSON body even without a schema. */
  readonly jsonConfigured: boolean;
  readonly injection: InjectionSettings | undefined;
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

/**
 * Compiles every ValidationPolicy among the workload's documents (the sidecar already selected them).
 * `compile`: the JSON Schema compiler (ajv is loaded on its first schema; a sidecar's is its policy validator's too).
 */
export function compileValidationRules(documents: readonly PolicyDocument[], compile: JsonSchemaCompiler = createJsonSchemaCompiler()): CompiledValidation {
  const entries: CallMatchEntry<CompiledValidationRule>[] = [];
  const problems: CompileProblem[] = [];
  for (const doc of documents) {
    if (!isKind(doc, 'ValidationPolicy')) continue;
    const spec = doc.spec;
    const policy = `${doc.metadata.namespace}/${doc.metadata.name}`;
    for (const rule of spec.rules) {
      const id = `${policy}#${rule.name}`;
      let schema: JsonSchemaCheck | undefined;
      if (rule.jsonSchema) {
        try {
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
        json: rule.json ?? DEFAULT_JSON_LIMITS,
        jsonConfigured: rule.json !== undefined,
        injection: rule.injection ? compileInjection(rule.injection) : undefined,
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
  if (rule.hasSchema && !call.isGrpc && !body.present) return { code: 'validate.malformed_json', reason: 'expected a JSON body' };
  if (readsBody(rule, call) && body.present && body.declaredLength !== undefined && body.declaredLength > body.bufferLimit) return overBuffer(body.bufferLimit);
  return undefined;
}

/** How a body of this content type is inspected for injection: JSON strings, form fields, the text, or not at all (binary, multipart). */
export function bodyForm(call: CallContext): 'json' | 'form' | 'text' | undefined {
  const media = mediaTypeOf(call.headers['content-type']);
  if (media === 'application/json' || media.endsWith('+json')) return 'json';
  if (media === 'application/x-www-form-urlencoded') return 'form';
  if (media === '' || media.startsWith('text/')) return 'text';
  return undefined;
}

/** Whether the rule reads the body as JSON: a schema or `json` limits always, injection detection when the content type says JSON. */
export function readsJson(rule: CompiledValidationRule, call: CallContext): boolean {
  return rule.hasSchema || rule.jsonConfigured || (rule.injection?.body === true && bodyForm(call) === 'json');
}

/** Whether the rule's checks read the body at all (gRPC bodies never). */
function readsBody(rule: CompiledValidationRule, call: CallContext): boolean {
  if (call.isGrpc) return false;
  return rule.hasSchema || rule.jsonConfigured || (rule.injection?.body === true && bodyForm(call) !== undefined);
}

/**
 * How many bytes of the body this rule must see, or undefined when its head
 * checks were enough. gRPC bodies are binary frames and often long-lived
 * streams: never buffered.
 */
export function bodyNeed(rule: CompiledValidationRule, call: CallContext, body: BodyFacts): number | undefined {
  if (call.isGrpc || !body.present) return undefined;
  const sizeUnknown = rule.maxBodyBytes !== undefined && body.declaredLength === undefined;
  if (!readsBody(rule, call) && !sizeUnknown) return undefined;
  return Math.min(rule.maxBodyBytes ?? Infinity, body.bufferLimit);
}

/** A parsed body, shared by the rules of one call: parsed at most once. */
export type ParsedJson = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly reason: string };

/**
 * A body as the rules of one call read it, each view made at most once: the
 * safe-JSON pass (under the loosest limits of the rules reading it as JSON),
 * the parsed value, the text.
 */
export class CallBody {
  readonly bytes: Buffer;
  readonly #limits: JsonLimits;
  #scan: JsonScan | undefined;
  #parsed: ParsedJson | undefined;
  #text: string | undefined;

  constructor(bytes: Buffer, limits: JsonLimits) {
    this.bytes = bytes;
    this.#limits = limits;
  }

  get scan(): JsonScan {
    this.#scan ??= scanJson(this.bytes, this.#limits);
    return this.#scan;
  }

  /** Parsed once, and only after the safe-JSON pass let it through (checkJson). */
  get parsed(): ParsedJson {
    if (!this.#parsed) {
      try {
        this.#parsed = { ok: true, value: JSON.parse(this.text) as unknown };
      } catch {
        // V8's message quotes the input: never sent back to the caller.
        this.#parsed = { ok: false, reason: 'request body is not valid JSON' };
      }
    }
    return this.#parsed;
  }

  /** UTF-8, or Latin-1 when it is not (an injection signature is ASCII either way). */
  get text(): string {
    this.#text ??= this.bytes.toString(isUtf8(this.bytes) ? 'utf8' : 'latin1');
    return this.#text;
  }
}

/** The size checks on the body as read (`read` covers at least `bodyNeed(rule)` bytes). */
export function checkBodySize(rule: CompiledValidationRule, read: BodyRead, body: BodyFacts): RuleFailure | undefined {
  if (read.kind === 'failed' || read.kind === 'over_budget') return undefined; // the filter answers for the call itself
  const ownLimit = Math.min(rule.maxBodyBytes ?? Infinity, body.bufferLimit);
  const size = read.kind === 'complete' ? read.bytes.length : Infinity;
  if (size > ownLimit) {
    return rule.maxBodyBytes !== undefined && rule.maxBodyBytes <= body.bufferLimit
      ? { code: 'validate.body_too_large', reason: `request body exceeds ${rule.maxBodyBytes} bytes` }
      : overBuffer(body.bufferLimit);
  }
  return undefined;
}

/** Safe JSON on the bytes, then a parse, for a rule that reads the body as JSON: before any signature or schema sees it. */
export function checkJson(rule: CompiledValidationRule, body: CallBody): RuleFailure | undefined {
  if (rule.hasSchema && !rule.schema) return { code: 'filter.error', reason: 'the JSON Schema of this rule could not be compiled' };
  if (body.bytes.length === 0) return rule.hasSchema || rule.jsonConfigured ? { code: 'validate.malformed_json', reason: 'expected a JSON body' } : undefined;
  const unsafe = checkJsonScan(body.scan, rule.json);
  if (unsafe) return unsafe;
  const parsed = body.parsed;
  return parsed.ok ? undefined : { code: 'validate.malformed_json', reason: parsed.reason };
}

/** The schema, on a body checkJson let through. */
export function checkSchema(rule: CompiledValidationRule, body: CallBody): RuleFailure | undefined {
  if (!rule.schema || body.bytes.length === 0) return undefined;
  const parsed = body.parsed;
  if (!parsed.ok) return undefined;
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
