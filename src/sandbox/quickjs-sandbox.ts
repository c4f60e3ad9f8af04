import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { QuickJSContext, QuickJSHandle, QuickJSRuntime, QuickJSSyncVariant, QuickJSWASMModule } from 'quickjs-emscripten-core';
import { guestCallFor } from './guest-call.ts';
import { installHost } from './host-capabilities.ts';
import type { SourceProblem } from './typescript.ts';
import { stripTypes } from './typescript.ts';

/*
 * Code a user wrote, run in a real sandbox: QuickJS compiled to WebAssembly
 * (quickjs-emscripten). The guest has its own heap inside the WebAssembly
 * memory, capped per runtime (setMemoryLimit), a capped stack, and a deadline
 * per call enforced by QuickJS's interrupt handler. It has no file system,
 * network, process, timers or host objects: QuickJS's bare context holds the
 * language's built-ins and nothing of Node's, plus one deliberate capability,
 * `meshgate.hmacSha256` / `meshgate.sha256` (host-capabilities.ts). Data crosses as JSON text only,
 * so no guest object (nor a prototype it polluted) ever reaches the host.
 *
 * Why not node:vm: a vm context shares the host's V8 heap and event loop and
 * its own documentation says it is not a security mechanism (a loop or an
 * allocation in it stalls or kills the sidecar); isolated-vm gives real V8
 * isolates but needs a native build per Node version. QuickJS/WASM installs
 * from the registry as plain files and can only reach what the host passes in.
 *
 * Memory: QuickJS's own limit (setMemoryLimit) counts only the size of each
 * allocation against the limit in this WebAssembly build, not their sum
 * (upstream: justjake/quickjs-emscripten#271, #255), so a loop of small
 * allocations would grow the sidecar without end. Each program therefore gets
 * its own WebAssembly instance whose linear memory has a fixed maximum (the
 * engine's 16 MiB base plus the budget): past it, malloc fails inside the
 * guest and QuickJS throws out of memory. The compiled WebAssembly module is
 * shared; an instance costs ~10 ms and only the pages it touches.
 *
 * The engine (the WebAssembly module) is loaded on demand, once per owner:
 * a sidecar whose policy has no Filter document never imports it.
 */

interface SandboxBudget {
  /** Wall time one call may run (the guest is synchronous code on this thread, so wall time is its CPU time). */
  readonly cpuMs: number;
  /** The guest heap's cap. */
  readonly memoryBytes: number;
}

export type SandboxFailureKind = 'threw' | 'timeout' | 'memory' | 'bad_result' | 'unsettled';

interface SandboxFailure {
  readonly kind: SandboxFailureKind;
  /** One line for logs; from the guest (its error message) or from us. Never sent to a caller. */
  readonly message: string;
}

type RunOutcome = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly failure: SandboxFailure };

export interface SandboxProgram {
  /** Calls the check with `input` (JSON text of the argument); the result is the check's return value, through JSON. */
  call(input: string): RunOutcome;
  /** Frees the QuickJS runtime; later calls fail. Idempotent. */
  dispose(): void;
  readonly disposed: boolean;
  /** Whether calls take the direct path into the engine (guest-call.ts), not the slower public API. */
  readonly directCalls: boolean;
}

interface ProgramSpec {
  /** Name in guest stack traces and errors, e.g. `Filter/ns/name`. */
  readonly name: string;
  /** TypeScript or JavaScript module source exporting the function. */
  readonly source: string;
  /** JSON text of the second argument every call gets (the document's config), deep-frozen in the guest. */
  readonly configJson: string;
  /** The top-level fields of the first argument: read from its JSON text on first use. */
  readonly fields: readonly string[];
  readonly budget: SandboxBudget;
  /** `source` with its types already stripped (the policy server's, see SandboxLoader.knowJavaScript): compiled instead of stripping here. */
  readonly javascript?: string;
  /**
   * The key of a secret the check may sign with (meshgate.hmacSha256Secret),
   * by name; undefined for a name it may not use. The key stays on the host.
   */
  readonly secretKey?: (name: string) => Buffer | undefined;
}

type CompileOutcome = { readonly ok: true; readonly program: SandboxProgram } | { readonly ok: false; readonly problem: SourceProblem };

export interface SandboxEngine {
  /** Strips types, evaluates the module in a fresh instance and runtime and finds its function. Never rejects for bad source. */
  compile(spec: ProgramSpec): Promise<CompileOutcome>;
}

/** Largest JSON text a check may return: a verdict is a few hundred bytes. */
const MAX_RESULT_CHARS = 64 * 1024;
/** The guest's C stack: deep enough for real code, short of the WebAssembly stack. */
const MAX_STACK_BYTES = 256 * 1024;
/** Time the module's top level may take when it is compiled (it runs once per document version). */
const COMPILE_MS = 1000;

/**
 * The guest side of each call, built once per program in the guest: the
 * argument arrives as JSON text, the config is frozen once, the result
 * leaves as JSON text. A promise is returned as is and settled by the host (runPending).
 */
const INVOKER_FACTORY = `(function (check, configJson, fields) {
  'use strict';
  const parse = JSON.parse, stringify = JSON.stringify, freeze = Object.freeze, keys = Object.keys;
  const deepFreeze = (v) => { if (v !== null && typeof v === 'object') { freeze(v); for (const k of keys(v)) deepFreeze(v[k]); } return v; };
  const config = deepFreeze(parse(configJson));
  // The argument is parsed on its first read: a check that decides without looking at the call pays no parse.
  const TEXT = Symbol('text'), VALUE = Symbol('value');
  function Call(text) { this[TEXT] = text; this[VALUE] = undefined; }
  const value = (c) => c[VALUE] === undefined ? (c[VALUE] = parse(c[TEXT])) : c[VALUE];
  for (const k of parse(fields)) Object.defineProperty(Call.prototype, k, { get() { return value(this)[k]; }, enumerable: true });
  Object.defineProperty(Call.prototype, 'toJSON', { value() { return value(this); } });
  const ALLOW = '{"allow":true}';
  // Only an own 'allow' alone takes the short cut: what JSON would carry, whatever the check did to Object.prototype.
  const isAllow = (r) => { if (r === null || typeof r !== 'object' || r.allow !== true) return false; const k = keys(r); return k.length === 1 && k[0] === 'allow'; };
  const finish = (r) => isAllow(r) ? ALLOW : stringify(r === undefined ? null : r);
  return function (callJson) {
    const r = check(new Call(callJson), config);
    if (r !== null && typeof r === 'object' && typeof r.then === 'function') return r.then(finish);
    return finish(r);
  };
})`;

const INVOKER_NAME = 'meshgate:invoker';
/** The most common answer, passed as this exact text and never parsed. */
const ALLOW_TEXT = '{"allow":true}';
const ALLOW_VALUE = Object.freeze({ allow: true });

/** `{name, message}` of a guest error, read defensively: a guest may throw anything. */
function describeError(ctx: QuickJSContext, error: QuickJSHandle): { name: string; message: string; stack: string } {
  try {
    const dumped = ctx.dump(error) as unknown;
    if (dumped !== null && typeof dumped === 'object') {
      const d = dumped as { name?: unknown; message?: unknown; stack?: unknown };
      return { name: String(d.name ?? 'Error'), message: String(d.message ?? ''), stack: typeof d.stack === 'string' ? d.stack : '' };
    }
    return { name: 'Error', message: `threw ${String(dumped).slice(0, 200)}`, stack: '' };
  } catch {
    return { name: 'Error', message: 'threw a value that cannot be read', stack: '' };
  }
}

/** The parts of the WebAssembly API used here (the project's TypeScript libs do not declare it). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmApi {
  readonly Memory: new (descriptor: { initial: number; maximum: number }) => WasmMemory;
  compile(bytes: Uint8Array): Promise<unknown>;
}
const wasmApi = (): WasmApi => (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** The guest's memory, and whether it has grown to its maximum (then any failure is for want of memory). */
interface GuestMemory {
  readonly memory: WasmMemory;
  readonly maxBytes: number;
}

function classify(described: { name: string; message: string }, guest?: GuestMemory): SandboxFailure {
  // Out of memory may leave QuickJS unable to make an error object: it throws null then.
  if (guest && guest.memory.buffer.byteLength + PAGE_BYTES > guest.maxBytes) return { kind: 'memory', message: 'ran out of its memory budget' };
  const message = `${described.name}: ${described.message}`.slice(0, 300);
  if (described.name === 'InternalError' && described.message === 'interrupted') return { kind: 'timeout', message: 'ran past its CPU budget' };
  if (/out of memory/i.test(described.message)) return { kind: 'memory', message: 'ran out of its memory budget' };
  return { kind: 'threw', message };
}

/** `name:LINE:COLUMN` of the first frame of a QuickJS stack, for compile errors. */
function locate(stack: string, name: string): { line: number; column: number } {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const match = new RegExp(`${escaped}:(\\d+)(?::(\\d+))?`).exec(stack);
  return match ? { line: Number(match[1]), column: Number(match[2] ?? 1) } : { line: 1, column: 1 };
}

/** WebAssembly pages (64 KiB) the engine's memory declares as its minimum: its static data and C stack. */
const BASE_PAGES = 256;
const PAGE_BYTES = 65_536;

function createEngine(instantiate: (memory: WasmMemory) => Promise<QuickJSWASMModule>): SandboxEngine {
  return {
    async compile(spec) {
      const stripped = spec.javascript !== undefined ? ({ ok: true, js: spec.javascript } as const) : stripTypes(spec.source);
      if (!stripped.ok) return stripped;
      const pages = BASE_PAGES + Math.ceil(spec.budget.memoryBytes / PAGE_BYTES);
      const memory = new (wasmApi().Memory)({ initial: BASE_PAGES, maximum: pages });
      const guest: GuestMemory = { memory, maxBytes: pages * PAGE_BYTES };
      const quickjs = await instantiate(memory);
      const runtime = quickjs.newRuntime();
      // The deadline lives on this closure: one interrupt handler for the runtime's life, no allocation per call.
      const clock = { deadline: Number.POSITIVE_INFINITY };
      runtime.setInterruptHandler(() => performance.now() > clock.deadline);
      runtime.setMemoryLimit(spec.budget.memoryBytes);
      runtime.setMaxStackSize(MAX_STACK_BYTES);
      const ctx = runtime.newContext();
      const fail = (problem: SourceProblem): CompileOutcome => {
        ctx.dispose();
        runtime.dispose();
        return { ok: false, problem };
      };
      installHost(ctx, spec.secretKey);
      // Without a module loader an `import` fails to compile: a check is one file.
      clock.deadline = performance.now() + COMPILE_MS;
      const evaluated = ctx.evalCode(stripped.js, spec.name, { type: 'module' });
      if (evaluated.error) {
        const described = describeError(ctx, evaluated.error);
        evaluated.error.dispose();
        const failure = classify(described, guest);
        return fail({ ...locate(described.stack, spec.name), message: failure.kind === 'threw' ? failure.message : `the module's top level ${failure.message}` });
      }
      const namespace = settle(ctx, runtime, evaluated.value, guest);
      clock.deadline = Number.POSITIVE_INFINITY;
      if (!namespace.ok) return fail({ line: 1, column: 1, message: `the module's top level failed: ${namespace.failure.message}` });
      const exported = pickExport(ctx, namespace.value);
      namespace.value.dispose();
      if (!exported) return fail({ line: 1, column: 1, message: 'the module must export its check as a function: `export default function check(call, config) {...}`' });
      const factoryResult = ctx.evalCode(INVOKER_FACTORY, INVOKER_NAME, { type: 'global' });
      if (factoryResult.error) {
        factoryResult.error.dispose();
        exported.dispose();
        return fail({ line: 1, column: 1, message: 'the sandbox could not prepare the check' });
      }
      const configArg = ctx.newString(spec.configJson);
      const fieldsArg = ctx.newString(JSON.stringify(spec.fields));
      clock.deadline = performance.now() + COMPILE_MS;
      const made = ctx.callFunction(factoryResult.value, ctx.undefined, exported, configArg, fieldsArg);
      clock.deadline = Number.POSITIVE_INFINITY;
      configArg.dispose();
      fieldsArg.dispose();
      factoryResult.value.dispose();
      exported.dispose();
      if (made.error) {
        const described = describeError(ctx, made.error);
        made.error.dispose();
        return fail({ line: 1, column: 1, message: `the document's config could not be handed to the check: ${classify(described).message}` });
      }
      return { ok: true, program: createProgram(ctx, runtime, made.value, clock, spec.budget, guest) };
    },
  };
}

/** The module's `default` export, else its `check` export, when it is a function. */
function pickExport(ctx: QuickJSContext, namespace: QuickJSHandle): QuickJSHandle | undefined {
  for (const name of ['default', 'check']) {
    const value = ctx.getProp(namespace, name);
    if (ctx.typeof(value) === 'function') return value;
    value.dispose();
  }
  return undefined;
}

/**
 * A value that may be a guest promise -> its settled value. The guest has no
 * timers or I/O, so once its pending jobs have run a promise that is still
 * pending never settles: that is a failure, not a wait.
 */
function settle(ctx: QuickJSContext, runtime: QuickJSRuntime, handle: QuickJSHandle, guest: GuestMemory): { ok: true; value: QuickJSHandle } | { ok: false; failure: SandboxFailure } {
  const first = ctx.getPromiseState(handle);
  if (first.type === 'fulfilled' && first.notAPromise) return { ok: true, value: handle };
  if (first.type === 'fulfilled') first.value.dispose();
  if (first.type === 'rejected') first.error.dispose();
  const jobs = runtime.executePendingJobs();
  if (jobs.error) {
    const described = describeError(ctx, jobs.error);
    jobs.error.dispose();
    handle.dispose();
    return { ok: false, failure: classify(described, guest) };
  }
  const state = ctx.getPromiseState(handle);
  handle.dispose();
  if (state.type === 'fulfilled') return { ok: true, value: state.value };
  if (state.type === 'rejected') {
    const described = describeError(ctx, state.error);
    state.error.dispose();
    return { ok: false, failure: classify(described, guest) };
  }
  return { ok: false, failure: { kind: 'unsettled', message: 'returned a promise that never settles (a check has no timers or I/O to wait for)' } };
}

function createProgram(ctx: QuickJSContext, runtime: QuickJSRuntime, invoker: QuickJSHandle, clock: { deadline: number }, budget: SandboxBudget, guest: GuestMemory): SandboxProgram {
  let disposed = false;
  const guestCall = guestCallFor(ctx);
  /** The JSON text of what the check returned -> the outcome. */
  const fromText = (text: string): RunOutcome => {
    if (text.length > MAX_RESULT_CHARS) return { ok: false, failure: { kind: 'bad_result', message: `returned ${text.length} characters of JSON (at most ${MAX_RESULT_CHARS})` } };
    return { ok: true, value: text === ALLOW_TEXT ? ALLOW_VALUE : (JSON.parse(text) as unknown) };
  };
  const program: SandboxProgram = {
    get disposed() {
      return disposed;
    },
    get directCalls() {
      return guestCall.direct;
    },
    call(input) {
      if (disposed) return { ok: false, failure: { kind: 'threw', message: 'the check was disposed' } };
      clock.deadline = performance.now() + budget.cpuMs;
      try {
        const result = guestCall.call(invoker, input);
        if (result.kind === 'text') return fromText(result.text);
        if (result.kind === 'no_memory') return { ok: false, failure: { kind: 'memory', message: 'ran out of its memory budget' } };
        if (result.kind === 'error') {
          const described = describeError(ctx, result.error);
          result.error.dispose();
          return { ok: false, failure: classify(described, guest) };
        }
        // A promise (an async check): its jobs run now, within the same deadline.
        const settled = settle(ctx, runtime, result.value, guest);
        if (!settled.ok) return settled;
        const kind = ctx.typeof(settled.value);
        const text = kind === 'string' ? ctx.getString(settled.value) : undefined;
        settled.value.dispose();
        if (text === undefined) return { ok: false, failure: { kind: 'bad_result', message: `returned a value JSON cannot carry (${kind})` } };
        return fromText(text);
      } finally {
        clock.deadline = Number.POSITIVE_INFINITY;
      }
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      guestCall.dispose();
      invoker.dispose();
      ctx.dispose();
      runtime.dispose();
    },
  };
  return program;
}

/** Loads the QuickJS WebAssembly engine (~20 ms, ~1 MB): only for a policy that has a Filter document. */
export async function loadSandboxEngine(): Promise<SandboxEngine> {
  const [{ newQuickJSWASMModuleFromVariant, newVariant }, variant] = await Promise.all([import('quickjs-emscripten-core'), import('@jitl/quickjs-wasmfile-release-sync')]);
  // Compiled once; each program instantiates it with a memory of its own.
  const bytes = await readFile(createRequire(import.meta.url).resolve('@jitl/quickjs-wasmfile-release-sync/wasm'));
  const wasmModule = await wasmApi().compile(bytes);
  const base = variant.default as unknown as QuickJSSyncVariant;
  return createEngine((wasmMemory) => newQuickJSWASMModuleFromVariant(newVariant(base, { wasmModule: wasmModule as never, wasmMemory: wasmMemory as never })));
}

/** The engine, loaded at most once by its owner (a sidecar, the policy server, a CLI command). */
export interface SandboxLoader {
  /** The engine when loaded; undefined before. */
  current(): SandboxEngine | undefined;
  load(): Promise<SandboxEngine>;
  /**
   * The JavaScript the policy server made of `source` (its types stripped):
   * compiling that exact source then needs no type stripping in this process.
   * Node's stripper compiles SWC's WebAssembly the first time it runs, ~130 ms
   * of CPU and ~19 MB of RSS, paid by every sidecar with a Filter document.
   * The text is the policy server's, as the source is: it gains no trust it
   * did not have.
   */
  knowJavaScript(source: string, javascript: string): void;
}

/** Sources whose JavaScript is remembered: a policy has a handful of Filter documents; old versions age out. */
const MAX_KNOWN_JAVASCRIPT = 64;

export function createSandboxLoader(load: () => Promise<SandboxEngine> = loadSandboxEngine): SandboxLoader {
  let engine: SandboxEngine | undefined;
  let loading: Promise<SandboxEngine> | undefined;
  const known = new Map<string, string>();
  const withKnownJavaScript = (inner: SandboxEngine): SandboxEngine => ({
    compile(spec) {
      const javascript = spec.javascript ?? known.get(spec.source);
      return inner.compile(javascript === undefined ? spec : { ...spec, javascript });
    },
  });
  return {
    current: () => engine,
    knowJavaScript(source, javascript) {
      known.delete(source);
      known.set(source, javascript);
      if (known.size > MAX_KNOWN_JAVASCRIPT) known.delete(known.keys().next().value!);
    },
    load() {
      loading ??= load().then(
        (loaded) => (engine = withKnownJavaScript(loaded)),
        (err: unknown) => {
          loading = undefined; // a failed load is tried again by the next document
          throw err;
        },
      );
      return loading;
    },
  };
}
