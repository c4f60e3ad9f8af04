import { createHash, createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxEngine, SandboxProgram } from '../../../src/sandbox/quickjs-sandbox.ts';
import { loadSandboxEngine } from '../../../src/sandbox/quickjs-sandbox.ts';

const BUDGET = { cpuMs: 50, memoryBytes: 16 * 1024 * 1024 };
/** The fields the tests' calls carry. */
const FIELDS = ['path', 'loop'];

let engine: SandboxEngine;
const programs: SandboxProgram[] = [];
beforeAll(async () => {
  engine = await loadSandboxEngine();
});
afterAll(() => {
  for (const p of programs) p.dispose();
});

async function program(source: string, config: unknown = {}): Promise<SandboxProgram> {
  const compiled = await engine.compile({ name: 'Filter/test/check', source, configJson: JSON.stringify(config), budget: BUDGET, fields: FIELDS });
  if (!compiled.ok) throw new Error(`did not compile: ${JSON.stringify(compiled.problem)}`);
  programs.push(compiled.program);
  return compiled.program;
}

describe('the QuickJS sandbox', () => {
  it('runs a TypeScript check over the call and its config and returns its verdict', async () => {
    const check = await program(
      `interface Call { path: string }
       export default function check(call: Call, config: { prefix: string }): { allow: boolean } {
         return { allow: call.path.startsWith(config.prefix) };
       }`,
      { prefix: '/orders' },
    );
    expect(check.call(JSON.stringify({ path: '/orders/1' }))).toEqual({ ok: true, value: { allow: true } });
    expect(check.call(JSON.stringify({ path: '/admin' }))).toEqual({ ok: true, value: { allow: false } });
  });

  it('settles an async check within the call', async () => {
    const check = await program(`export default async function check(call) { await null; return { deny: { status: 403, code: 'x', reason: call.path } }; }`);
    expect(check.call('{"path":"/p"}')).toEqual({ ok: true, value: { deny: { status: 403, code: 'x', reason: '/p' } } });
  });

  it('gives the check a read-only call and a frozen config', async () => {
    const check = await program(
      `export default function check(call, config) {
         const refused = [];
         try { call.path = 'changed'; } catch { refused.push('call'); }
         try { config.limit = 0; } catch { refused.push('config'); }
         return { deny: { code: refused.join('+'), reason: call.path + ' ' + JSON.stringify(call) } };
       }`,
      { limit: 1 },
    );
    expect(check.call('{"path":"/a"}')).toEqual({ ok: true, value: { deny: { code: 'call+config', reason: '/a {"path":"/a"}' } } });
  });

  it('reports a check that throws as a failure with its message', async () => {
    const check = await program(`export default function check() { throw new TypeError('boom'); }`);
    expect(check.call('{}')).toEqual({ ok: false, failure: { kind: 'threw', message: 'TypeError: boom' } });
  });

  it('stops an infinite loop at its CPU budget, and the program still answers afterwards', async () => {
    const check = await program(`export default function check(call) { if (call.loop) for (;;) {} return { allow: true }; }`);
    const started = performance.now();
    expect(check.call('{"loop":true}')).toEqual({ ok: false, failure: { kind: 'timeout', message: 'ran past its CPU budget' } });
    expect(performance.now() - started).toBeLessThan(1000);
    expect(check.call('{"loop":false}')).toEqual({ ok: true, value: { allow: true } });
  });

  it('refuses a 1 GB allocation and a loop of small ones at the memory budget, in bounded time', async () => {
    const big = await program(`export default function check() { return new ArrayBuffer(1024 * 1024 * 1024).byteLength; }`);
    expect(big.call('{}')).toMatchObject({ ok: false, failure: { kind: 'memory' } });
    // Each allocation is under QuickJS's own limit: only the instance's capped memory stops this one.
    const many = await program(`const kept = []; export default function check() { for (;;) kept.push(new Uint8Array(100000)); }`);
    const started = performance.now();
    const outcome = many.call('{}');
    expect(outcome.ok).toBe(false);
    expect(['memory', 'timeout']).toContain(!outcome.ok && outcome.failure.kind);
    expect(performance.now() - started).toBeLessThan(5000);
    const strings = await program(`const kept = []; export default function check() { for (;;) kept.push('x'.repeat(100000) + kept.length); }`);
    expect(strings.call('{}')).toMatchObject({ ok: false });
  });

  it('finds no process, require, fetch, timers or console in the guest', async () => {
    const check = await program(`export default function check() { return [typeof process, typeof require, typeof globalThis.fetch, typeof setTimeout, typeof console, typeof WebAssembly]; }`);
    expect(check.call('{}')).toEqual({ ok: true, value: ['undefined', 'undefined', 'undefined', 'undefined', 'undefined', 'undefined'] });
  });

  it("offers the host's HMAC-SHA256 and SHA-256 (node:crypto's results), refusing bad input as a throw in the guest", async () => {
    const check = await program(`export default (call) => [meshgate.hmacSha256('0011', call.path), meshgate.sha256(call.path), Object.isFrozen(meshgate)];`);
    expect(check.call('{"path":"/p"}')).toEqual({
      ok: true,
      value: [createHmac('sha256', Buffer.from('0011', 'hex')).update('/p').digest('hex'), createHash('sha256').update('/p').digest('hex'), true],
    });
    const bad = await program(`export default () => meshgate.hmacSha256('not hex', 'x');`);
    expect(bad.call('{}')).toEqual({ ok: false, failure: { kind: 'threw', message: 'TypeError: hmacSha256 key: expected hex' } });
    const big = await program(`export default () => meshgate.sha256('x'.repeat(100000));`);
    expect(big.call('{}')).toMatchObject({ ok: false, failure: { kind: 'threw', message: expect.stringContaining('at most') } });
  });

  it('signs with each key it is given, also when keys change between calls (a hex key per call, a rotated secret file)', async () => {
    const hmac = (key: Buffer, message: string) => createHmac('sha256', key).update(message).digest('hex');
    const byHex = await program(`export default (call) => meshgate.hmacSha256(call.path, 'msg');`);
    for (const keyHex of ['0011', 'aabbcc', '0011']) expect(byHex.call(JSON.stringify({ path: keyHex }))).toEqual({ ok: true, value: hmac(Buffer.from(keyHex, 'hex'), 'msg') });
    let file = Buffer.from('first key');
    const compiled = await engine.compile({
      name: 'Filter/test/secret',
      source: `export default () => meshgate.hmacSha256Secret('signing', 'msg');`,
      configJson: '{}',
      budget: BUDGET,
      fields: FIELDS,
      secretKey: (name) => (name === 'signing' ? file : undefined),
    });
    if (!compiled.ok) throw new Error(JSON.stringify(compiled.problem));
    programs.push(compiled.program);
    expect(compiled.program.call('{}')).toEqual({ ok: true, value: hmac(Buffer.from('first key'), 'msg') });
    file = Buffer.from('rotated key'); // secret-files hands out a new Buffer when the file was read again
    expect(compiled.program.call('{}')).toEqual({ ok: true, value: hmac(Buffer.from('rotated key'), 'msg') });
  });

  it('keeps a prototype polluted in the guest inside the guest', async () => {
    const check = await program(
      `export default function check() { Object.prototype.polluted = 'yes'; Array.prototype.push = null; return JSON.parse('{"__proto__": {"polluted": "yes"}, "allow": true}'); }`,
    );
    const outcome = check.call('{}');
    expect(outcome.ok).toBe(true);
    expect(({} as { polluted?: string }).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
    expect(typeof [].push).toBe('function');
    // An inherited allow is not an allow: the verdict is what JSON carries.
    const inherited = await program(`export default function check() { Object.prototype.allow = true; return {}; }`);
    expect(inherited.call('{}')).toEqual({ ok: true, value: {} });
  });

  it('refuses a promise that can never settle (the guest has nothing to wait for)', async () => {
    const check = await program(`export default function check() { return new Promise(() => {}); }`);
    expect(check.call('{}')).toMatchObject({ ok: false, failure: { kind: 'unsettled' } });
  });

  it('refuses source that does not compile, with line and column', async () => {
    const outcome = await engine.compile({ name: 'Filter/test/bad', source: 'const a = 1;\nexport default function check(call: string { }', configJson: '{}', budget: BUDGET, fields: FIELDS });
    expect(outcome).toEqual({ ok: false, problem: { line: 2, column: 44, message: "Expected ',', got '{'" } });
  });

  it('refuses a module that does not export a function, and one that imports', async () => {
    const none = await engine.compile({ name: 'Filter/test/none', source: 'export const x = 1;', configJson: '{}', budget: BUDGET, fields: FIELDS });
    expect(none).toMatchObject({ ok: false, problem: { message: expect.stringContaining('must export its check as a function') } });
    const imports = await engine.compile({ name: 'Filter/test/imports', source: 'import fs from "fs";\nexport default () => 1;', configJson: '{}', budget: BUDGET, fields: FIELDS });
    expect(imports).toMatchObject({ ok: false, problem: { message: expect.stringContaining("could not load module 'fs'") } });
  });

  it('a disposed program answers with a failure instead of touching freed memory', async () => {
    const check = await program('export default () => ({ allow: true });');
    check.dispose();
    expect(check.disposed).toBe(true);
    expect(check.call('{}')).toMatchObject({ ok: false });
  });
});
