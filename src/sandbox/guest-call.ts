import type { QuickJSContext, QuickJSHandle } from 'quickjs-emscripten-core';

/*
 * One call into the guest with one string argument: the hot path of every
 * check of your own (the argument is the call view's JSON, ~0.5 KiB).
 *
 * quickjs-emscripten's public calls cost ~5 us here, most of it around the
 * guest, not in it: the string goes into WebAssembly memory through
 * Emscripten's `stringToUTF8`, a loop over the characters in JavaScript
 * (~2.7 us for 0.5 KiB), and `callFunction` builds a typed-array view and a
 * few lifetime objects per call; `typeof` and `getString` decode C strings the
 * same way. The direct path below calls the same C functions
 * (QTS_NewString, QTS_Call, QTS_GetString; quickjs-emscripten's own FFI) with
 * Node's native UTF-8 encoder and decoder and one argument slot allocated
 * once: ~0.8 us (bench/user-filter.ts has the whole figure).
 *
 * Why by hand and through protected fields: quickjs-emscripten has no cheaper
 * public call, and the FFI, the Emscripten module and the context pointer are
 * protected members of QuickJSContext. `guestCallFor` checks the shape it
 * relies on and falls back to the public API when it differs (the library
 * changed): correct, only slower. `GuestCall.direct` says which, and a unit
 * test asserts the direct path, so an upgrade that loses it fails the tests
 * rather than slowing every check.
 */

type GuestCallResult =
  /** The function returned a string (the invoker's JSON text). */
  | { readonly kind: 'text'; readonly text: string }
  /** It returned something else (a promise); the caller owns the handle. */
  | { readonly kind: 'value'; readonly value: QuickJSHandle }
  /** It threw; the caller owns the handle. */
  | { readonly kind: 'error'; readonly error: QuickJSHandle }
  /** The argument could not be placed in guest memory (it is full). */
  | { readonly kind: 'no_memory' };

export interface GuestCall {
  /** `fn(input)` in the guest, `this` undefined. */
  call(fn: QuickJSHandle, input: string): GuestCallResult;
  /** Frees what it holds in guest memory; before the context is disposed. */
  dispose(): void;
  /** Whether calls take the direct path. */
  readonly direct: boolean;
}

/** The members of QuickJSContext the direct path uses (protected in its typings). */
interface ContextInternals {
  readonly ctx: { readonly value: number };
  readonly module: {
    readonly HEAPU8: Uint8Array;
    _malloc(size: number): number;
    _free(pointer: number): void;
  };
  readonly ffi: {
    QTS_NewString(ctx: number, chars: number): number;
    QTS_Call(ctx: number, fn: number, self: number, argc: number, argv: number): number;
    QTS_ResolveException(ctx: number, value: number): number;
    QTS_Typeof(ctx: number, value: number): number;
    QTS_GetString(ctx: number, value: number): number;
    QTS_FreeCString(ctx: number, chars: number): void;
    QTS_FreeValuePointer(ctx: number, value: number): void;
  };
  readonly memory: { heapValueHandle(pointer: number): QuickJSHandle };
}

const FFI_FUNCTIONS = ['QTS_NewString', 'QTS_Call', 'QTS_ResolveException', 'QTS_Typeof', 'QTS_GetString', 'QTS_FreeCString', 'QTS_FreeValuePointer'] as const;

function internalsOf(ctx: QuickJSContext): ContextInternals | undefined {
  const c = ctx as unknown as Partial<Record<keyof ContextInternals, unknown>>;
  const pointer = c.ctx as { value?: unknown } | undefined;
  const module = c.module as Partial<ContextInternals['module']> | undefined;
  const ffi = c.ffi as Record<string, unknown> | undefined;
  const memory = c.memory as { heapValueHandle?: unknown } | undefined;
  if (typeof pointer?.value !== 'number') return undefined;
  if (!(module?.HEAPU8 instanceof Uint8Array) || typeof module._malloc !== 'function' || typeof module._free !== 'function') return undefined;
  if (!ffi || FFI_FUNCTIONS.some((name) => typeof ffi[name] !== 'function')) return undefined;
  if (typeof memory?.heapValueHandle !== 'function') return undefined;
  return c as unknown as ContextInternals;
}

/** The public API: what every call took before the direct path, and the fallback. */
function publicGuestCall(ctx: QuickJSContext): GuestCall {
  return {
    direct: false,
    call(fn, input) {
      const arg = ctx.newString(input);
      try {
        const result = ctx.callFunction(fn, ctx.undefined, arg);
        if (result.error) return { kind: 'error', error: result.error };
        if (ctx.typeof(result.value) !== 'string') return { kind: 'value', value: result.value };
        const text = ctx.getString(result.value);
        result.value.dispose();
        return { kind: 'text', text };
      } finally {
        arg.dispose();
      }
    },
    dispose() {},
  };
}

/** Bytes of the scratch area first allocated: the argument slot and a typical call view. */
const INITIAL_SCRATCH = 4096;
/** The argument slot (a pointer to the argument's JSValue) at the start of the scratch area. */
const ARGV_BYTES = 8;

export function guestCallFor(ctx: QuickJSContext): GuestCall {
  const internals = internalsOf(ctx);
  if (!internals) return publicGuestCall(ctx);
  const { module, ffi, memory } = internals;
  const context = internals.ctx.value;
  const undefinedPointer = ctx.undefined.value as unknown as number;
  let scratch = 0;
  let capacity = 0;
  // A Buffer over the WebAssembly memory, made again when the memory grows (its ArrayBuffer is replaced).
  let heap: Buffer | undefined;
  const heapBytes = (): Buffer => {
    const bytes = module.HEAPU8;
    if (heap === undefined || heap.buffer !== bytes.buffer) heap = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return heap;
  };
  /** A NUL-terminated C string in guest memory, as QuickJS reads it. */
  const readCString = (pointer: number): string => {
    const bytes = heapBytes();
    const end = bytes.indexOf(0, pointer);
    return bytes.toString('utf8', pointer, end < 0 ? bytes.length : end);
  };
  const reserve = (bytes: number): boolean => {
    if (bytes <= capacity) return true;
    if (scratch !== 0) module._free(scratch);
    capacity = Math.max(bytes, INITIAL_SCRATCH, capacity * 2);
    scratch = module._malloc(capacity);
    if (scratch === 0) capacity = 0;
    return scratch !== 0;
  };
  return {
    direct: true,
    call(fn, input) {
      // The JSON text of a call view has no NUL (JSON escapes control characters), so it ends at the terminator.
      if (!reserve(ARGV_BYTES + Buffer.byteLength(input, 'utf8') + 1)) return { kind: 'no_memory' };
      const chars = scratch + ARGV_BYTES;
      const bytes = heapBytes();
      const written = bytes.write(input, chars, capacity - ARGV_BYTES - 1, 'utf8');
      bytes[chars + written] = 0;
      const arg = ffi.QTS_NewString(context, chars);
      if (arg === 0) return { kind: 'no_memory' };
      // Read the heap again: QTS_NewString allocates, and a grown memory has a new ArrayBuffer.
      heapBytes().writeInt32LE(arg, scratch);
      const result = ffi.QTS_Call(context, fn.value as unknown as number, undefinedPointer, 1, scratch);
      ffi.QTS_FreeValuePointer(context, arg);
      const error = ffi.QTS_ResolveException(context, result);
      if (error !== 0) {
        ffi.QTS_FreeValuePointer(context, result);
        return { kind: 'error', error: memory.heapValueHandle(error) };
      }
      const type = ffi.QTS_Typeof(context, result);
      const isString = readCString(type) === 'string';
      module._free(type);
      if (!isString) return { kind: 'value', value: memory.heapValueHandle(result) };
      const resultChars = ffi.QTS_GetString(context, result);
      const text = readCString(resultChars);
      ffi.QTS_FreeCString(context, resultChars);
      ffi.QTS_FreeValuePointer(context, result);
      return { kind: 'text', text };
    },
    dispose() {
      if (scratch !== 0) module._free(scratch);
      scratch = 0;
      capacity = 0;
    },
  };
}
