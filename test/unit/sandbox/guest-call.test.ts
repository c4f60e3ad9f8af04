import variant from '@jitl/quickjs-wasmfile-release-sync';
import type { QuickJSContext } from 'quickjs-emscripten-core';
import { newQuickJSWASMModuleFromVariant } from 'quickjs-emscripten-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GuestCall } from '../../../src/sandbox/guest-call.ts';
import { guestCallFor } from '../../../src/sandbox/guest-call.ts';
import { loadSandboxEngine } from '../../../src/sandbox/quickjs-sandbox.ts';

let ctx: QuickJSContext;
beforeAll(async () => {
  ctx = (await newQuickJSWASMModuleFromVariant(variant as never)).newContext();
});
afterAll(() => ctx.dispose());

/** The same context with its protected members hidden: what a changed library would look like. */
const withoutInternals = (context: QuickJSContext): QuickJSContext =>
  new Proxy(context, {
    get(target, key) {
      if (key === 'ffi') return undefined;
      const value = Reflect.get(target, key, target) as unknown;
      // Its own methods still see the real context.
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });

const TEXTS = ['plain ascii', 'grüße, ça va? 日本語', 'emoji 😀 and an escaped \\ud800', 'x'.repeat(2 * 1024 * 1024)];

function exercise(call: GuestCall): void {
  const echo = ctx.unwrapResult(ctx.evalCode('(s) => s.length + ":" + s'));
  const thrower = ctx.unwrapResult(ctx.evalCode('(s) => { throw new TypeError("no " + s); }'));
  const asynchronous = ctx.unwrapResult(ctx.evalCode('async (s) => s'));
  try {
    for (const text of TEXTS) expect(call.call(echo, text)).toEqual({ kind: 'text', text: `${text.length}:${text}` });
    const thrown = call.call(thrower, 'way');
    expect(thrown.kind).toBe('error');
    if (thrown.kind === 'error') {
      expect(ctx.dump(thrown.error)).toMatchObject({ name: 'TypeError', message: 'no way' });
      thrown.error.dispose();
    }
    const promised = call.call(asynchronous, 'later');
    expect(promised.kind).toBe('value');
    if (promised.kind === 'value') {
      expect(ctx.typeof(promised.value)).toBe('object');
      promised.value.dispose();
    }
  } finally {
    for (const handle of [echo, thrower, asynchronous]) handle.dispose();
    call.dispose();
  }
}

describe('calls into the guest', () => {
  it('take the direct path on the installed quickjs-emscripten (an upgrade that loses it fails here instead of slowing every check)', async () => {
    expect(guestCallFor(ctx).direct).toBe(true);
    const engine = await loadSandboxEngine();
    const compiled = await engine.compile({ name: 'Filter/test/t', source: 'export default () => ({ allow: true });', configJson: '{}', budget: { cpuMs: 100, memoryBytes: 16 << 20 }, fields: [] });
    if (!compiled.ok) throw new Error(JSON.stringify(compiled.problem));
    expect(compiled.program.directCalls).toBe(true);
    compiled.program.dispose();
  });

  it('hand the guest exactly the text sent and bring back its string, its throw or its promise: ASCII, accents, emoji, 2 MiB that grow its memory', () => {
    exercise(guestCallFor(ctx));
  });

  it('fall back to the public API, with the same answers, when the library is not the shape the direct path needs', () => {
    const fallback = guestCallFor(withoutInternals(ctx));
    expect(fallback.direct).toBe(false);
    exercise(fallback);
  });
});
