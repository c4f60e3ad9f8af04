import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createUserFilterRuntime } from '../../../../src/filters/user-filter/user-filter.ts';
import { canonicalJson } from '../../../../src/policy/snapshot.ts';
import { createPolicyValidator } from '../../../../src/policy/validate.ts';
import { createSandboxLoader, loadSandboxEngine } from '../../../../src/sandbox/quickjs-sandbox.ts';
import { createFilterSourceChecks } from '../../../../src/sidecar/policy/filter-source-checks.ts';
import { createPolicySnapshotStore } from '../../../../src/sidecar/policy/snapshot-store.ts';
import type { DocumentEnvelope } from '../../../../src/sidecar/policy/subscriber-validate.ts';
import { policyModelValidator } from '../../../../src/sidecar/policy/subscriber-validate.ts';
import { createFakeClock } from '../../../helpers/fake-clock.ts';
import { captureLogs } from '../../../helpers/log-capture.ts';

const model = createPolicyValidator();

function filterEnvelope(name: string, source: string): DocumentEnvelope {
  const raw = { apiVersion: 'meshgate.dev/v1', kind: 'Filter', metadata: { name, namespace: 'shop' }, spec: { source } };
  const checked = model.validate(raw, { file: 'test', index: 0 });
  if (!checked.ok) throw new Error(JSON.stringify(checked.errors));
  const json = canonicalJson(checked.document.document);
  return { kind: 'Filter', namespace: 'shop', name, json, digest: createHash('sha256').update(json).digest('hex') };
}

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("a sidecar's check of the Filter sources it receives", () => {
  it('NACKs a source that does not compile, with line and column, and applies the rest', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-fsc-'));
    const base = policyModelValidator();
    const checks = createFilterSourceChecks(createSandboxLoader(), base);
    const store = createPolicySnapshotStore({ file: path.join(dir, 'snap.json'), logger: captureLogs().logger, validate: checks.validator(base), prepare: checks.prepare });
    const received = {
      version: 'v1',
      documents: [filterEnvelope('good', 'export default () => ({ allow: true });'), filterEnvelope('bad', 'export default function (call: {a: string} {\n}')],
      services: [],
    };
    await store.prepare(received);
    const result = store.apply(received, 0);
    expect(result.ack.accepted).toBe(false);
    expect(result.ack.errors).toEqual([{ document: 'Filter/shop/bad', field: 'spec.source', reason: "line 1, column 44: Expected ',', got '{'" }]);
    expect(result.snapshot.documents.map((d) => d.key)).toEqual(['Filter/shop/good']);
    store.close();
    await store.flush();
  });

  it('needs nothing for a snapshot without a Filter document (the sandbox is not loaded)', () => {
    let loads = 0;
    const checks = createFilterSourceChecks(
      createSandboxLoader(async () => {
        loads++;
        throw new Error('not expected');
      }),
      policyModelValidator(),
    );
    expect(checks.prepare([{ kind: 'AuthorizationPolicy', json: '{}' }])).toBeUndefined();
    expect(loads).toBe(0);
  });

  it('refuses a Filter it could not check (fail closed)', () => {
    const base = policyModelValidator();
    const validate = createFilterSourceChecks(createSandboxLoader(), base).validator(base);
    const result = validate(JSON.parse(filterEnvelope('unchecked', 'export default () => ({ allow: true });').json));
    expect(result).toMatchObject({ ok: false, errors: [{ field: 'spec.source', reason: expect.stringContaining('not checked') }] });
  });

  it("compiles the policy server's JavaScript for the exact source it came with, strips other sources itself, and keeps it in the disk copy", async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-fsc-'));
    const sandbox = createSandboxLoader();
    const base = policyModelValidator();
    const checks = createFilterSourceChecks(sandbox, base);
    const file = path.join(dir, 'snap.json');
    const store = createPolicySnapshotStore({ file, logger: captureLogs().logger, validate: checks.validator(base), prepare: checks.prepare });
    const source = 'export default (call: unknown) => ({ allow: true });';
    // Not what the source strips to: proof of which text runs.
    const javascript = "export default () => ({ deny: { status: 403, code: 'server-js', reason: 'compiled from the server JavaScript' } });";
    const shipped = { ...filterEnvelope('shipped', source), javascript };
    const received = { version: 'v1', documents: [shipped], services: [] };
    await store.prepare(received);
    expect(store.apply(received, 0).ack.accepted).toBe(true);
    const engine = await sandbox.load();
    const run = async (text: string) => {
      const compiled = await engine.compile({ name: 'x', source: text, configJson: '{}', fields: [], budget: { cpuMs: 100, memoryBytes: 16 * 1024 * 1024 } });
      if (!compiled.ok) throw new Error(compiled.problem.message);
      const outcome = compiled.program.call('{}');
      compiled.program.dispose();
      return outcome;
    };
    expect(await run(source)).toEqual({ ok: true, value: { deny: { status: 403, code: 'server-js', reason: 'compiled from the server JavaScript' } } });
    expect(await run(`${source}\n`)).toEqual({ ok: true, value: { allow: true } }); // another text: its own types stripped here
    store.close();
    await store.flush();
    const persisted = JSON.parse(await readFile(file, 'utf8')) as { documents: DocumentEnvelope[] };
    expect(persisted.documents.map((d) => d.javascript)).toEqual([javascript]);
  });

  it('in one process, compiles each version once: the program the check compiled is the one the chain runs', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-fsc-'));
    const engine = await loadSandboxEngine();
    let compiles = 0;
    const sandbox = createSandboxLoader(async () => ({
      compile: (spec) => {
        compiles++;
        return engine.compile(spec);
      },
    }));
    const runtimeLog = captureLogs({ name: 'sidecar' });
    const runtime = createUserFilterRuntime({ clock: createFakeClock(), random: () => 0.5, sandbox, logger: runtimeLog.logger });
    const base = policyModelValidator();
    const checks = createFilterSourceChecks(sandbox, base, (doc) => runtime.check(doc));
    const store = createPolicySnapshotStore({ file: path.join(dir, 'snap.json'), logger: captureLogs().logger, validate: checks.validator(base), prepare: checks.prepare });
    const received = {
      version: 'v1',
      documents: [
        filterEnvelope('good', "export default () => ({ deny: { status: 403, code: 'once', reason: 'compiled once' } });"),
        filterEnvelope('bad', 'export default function (call: {a: string} {\n}'),
      ],
      services: [],
    };
    await store.prepare(received);
    const result = store.apply(received, 0);
    // The same refusal as a check that compiles apart, with line and column.
    expect(result.ack.errors).toEqual([{ document: 'Filter/shop/bad', field: 'spec.source', reason: "line 1, column 44: Expected ',', got '{'" }]);
    expect(compiles).toBe(2);
    // What the enforcement does next: nothing left to compile, and the chain runs the checked program.
    const documents = result.snapshot.documents.map((d) => d.document);
    expect(runtime.prepare(documents)).toBeUndefined();
    const filter = runtime.compile(documents)['after-authz'];
    expect(compiles).toBe(2);
    expect(runtime.programs()).toBe(1);
    // The refused source is the check's NACK, not a runtime error about calls getting its failureMode.
    await runtimeLog.flushed();
    expect(runtimeLog.lines.filter((l) => l.level === 50)).toEqual([]);
    expect(filter).toBeDefined();
    runtime.close();
    store.close();
    await store.flush();
  });
});
