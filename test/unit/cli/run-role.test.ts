import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { RoleDescriptor } from '../../../src/cli/run-role.ts';
import { runRole, untilSignal } from '../../../src/cli/run-role.ts';
import { UsageError } from '../../../src/cli/usage-error.ts';
import { ConfigError } from '../../../src/config/load.ts';
import { eventually } from '../../helpers/eventually.ts';

/*
 * runRole is how `meshgate sidecar|ca|policy-server` run: flags, the file
 * read and checked once with the role's schema, start with the dependencies
 * every role gets, then run until SIGTERM or SIGINT and stop once. Tested
 * with a stand-in role so what is checked is the bootstrap, not a role.
 */

const schema = z
  .object({
    name: z.string(),
    log: z.object({ level: z.string() }).strict().default({ level: 'silent' }),
    telemetry: z.object({}).strict().default({}),
    greeting: z.string().default('hello'),
  })
  .strict();
type FakeConfig = z.output<typeof schema>;

interface Trace {
  started: Array<{ config: FakeConfig; deps: Parameters<RoleDescriptor<FakeConfig, string>['start']>[1] }>;
  stopped: Array<{ running: string; signal: string; config: FakeConfig }>;
}

function fakeRole(trace: Trace, overrides: Partial<RoleDescriptor<FakeConfig, string>> = {}): RoleDescriptor<FakeConfig, string> {
  return {
    name: 'fake',
    flags: { greeting: { type: 'string' } },
    schema: async () => schema,
    withFlags: (config, values) => (typeof values.greeting === 'string' ? { ...config, greeting: values.greeting } : config),
    tracing: (config) => ({ serviceName: config.name, resource: {} }),
    start: async (config, deps) => {
      trace.started.push({ config, deps });
      return `running ${config.name}`;
    },
    stop: async (running, { signal, config }) => {
      trace.stopped.push({ running, signal, config });
    },
    ...overrides,
  };
}

type Listener = (...args: never) => unknown;
type SignalListeners = { SIGTERM: Listener[]; SIGINT: Listener[] };

/** Signal listeners added since `before` (untilSignal holds one per signal while it waits and stops). */
function signalListenersSince(before: SignalListeners): Array<['SIGTERM' | 'SIGINT', Listener]> {
  return (['SIGTERM', 'SIGINT'] as const).flatMap((signal) =>
    process
      .listeners(signal)
      .filter((l) => !before[signal].includes(l))
      .map((l) => [signal, l] as ['SIGTERM' | 'SIGINT', Listener]),
  );
}

describe('runRole', () => {
  let dir: string;
  let file: string;
  let trace: Trace;
  let before: SignalListeners;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-run-role-'));
    file = path.join(dir, 'fake.yaml');
    await writeFile(file, 'name: shop\n');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    trace = { started: [], stopped: [] };
    before = { SIGTERM: process.listeners('SIGTERM'), SIGINT: process.listeners('SIGINT') };
  });
  afterEach(() => {
    for (const [signal, listener] of signalListenersSince(before)) process.removeListener(signal, listener as () => void);
  });

  /** Starts the role and waits until it runs (its signal handlers are in place). */
  async function startFake(args: string[]): Promise<{ exit: Promise<number> }> {
    const exit = runRole(fakeRole(trace), args);
    await eventually(() => signalListenersSince(before).length, { until: (n) => n === 2, what: 'the role to wait for a signal' });
    return { exit }; // wrapped: an async function would wait for the exit it returned
  }

  it("starts the role with the file as its schema reads it, its flags applied, and the file's folder for relative paths", async () => {
    const relative = path.relative(process.cwd(), file);
    const { exit } = await startFake(['-c', relative, '--greeting', 'hi']);
    expect(trace.started).toHaveLength(1);
    const [{ config, deps }] = trace.started as [Trace['started'][number]];
    expect(config).toEqual({ name: 'shop', log: { level: 'silent' }, telemetry: {}, greeting: 'hi' });
    expect({ configFile: deps.configFile, configDir: deps.configDir, defaultMetrics: deps.defaultMetrics }).toEqual({ configFile: relative, configDir: dir, defaultMetrics: true });
    expect(Math.abs(deps.clock.now() - Date.now())).toBeLessThan(1_000);
    expect(deps.random()).toBeGreaterThanOrEqual(0);
    expect(deps.tracing.tracer).toBeUndefined(); // no tracing section and no OTEL_* in the environment: off
    process.emit('SIGTERM', 'SIGTERM');
    expect(await exit).toBe(0);
  });

  it('runs until SIGTERM or SIGINT, then stops once (a second signal does nothing) and exits 0', async () => {
    let settled = false;
    const { exit } = await startFake(['--config', file]);
    void exit.then(() => (settled = true));
    expect(trace.stopped).toEqual([]);
    expect(settled).toBe(false);
    process.emit('SIGINT', 'SIGINT');
    process.emit('SIGTERM', 'SIGTERM');
    expect(await exit).toBe(0);
    expect(trace.stopped).toEqual([{ running: 'running shop', signal: 'SIGINT', config: trace.started[0]!.config }]);
  });

  it('a missing --config, an unknown flag or a bad file is refused before the role starts', async () => {
    const role = fakeRole(trace);
    await expect(runRole(role, [])).rejects.toThrow(new UsageError('meshgate fake: missing --config FILE'));
    await expect(runRole(role, ['--config', ''])).rejects.toThrow(new UsageError('meshgate fake: missing --config FILE'));
    await expect(runRole(role, ['--config', file, '--colour', 'red'])).rejects.toMatchObject({ code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' });
    const bad = path.join(dir, 'bad.yaml');
    await writeFile(bad, 'name: 7\ncolour: red\n');
    const refused = runRole(role, ['--config', bad]);
    await expect(refused).rejects.toBeInstanceOf(ConfigError);
    await expect(refused).rejects.toThrow(`${bad}: name: expected string, got 7\n${bad}: colour: unknown field`);
    expect(trace.started).toEqual([]);
    expect(signalListenersSince(before)).toEqual([]);
  });

  it('a flag the role refuses stops it before it starts', async () => {
    const role = fakeRole(trace, {
      withFlags: () => {
        throw new UsageError('meshgate fake: --greeting: too rude');
      },
    });
    await expect(runRole(role, ['--config', file, '--greeting', 'oi'])).rejects.toThrow('meshgate fake: --greeting: too rude');
    expect(trace.started).toEqual([]);
  });

  it('a start that fails rejects with its error and leaves no signal handler behind', async () => {
    const failure = Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE' });
    const role = fakeRole(trace, {
      start: async () => {
        throw failure;
      },
    });
    await expect(runRole(role, ['--config', file])).rejects.toBe(failure);
    expect(signalListenersSince(before)).toEqual([]);
    expect(trace.stopped).toEqual([]);
  });
});

describe('untilSignal', () => {
  it('stops once on the first signal, flushes the log after the stop finished, then resolves 0', async () => {
    const before: SignalListeners = { SIGTERM: process.listeners('SIGTERM'), SIGINT: process.listeners('SIGINT') };
    const events: string[] = [];
    let finishStop!: () => void;
    const exit = untilSignal({ flush: () => events.push('flush'), error: () => {} }, (signal) => {
      events.push(`stop ${signal}`);
      return new Promise<void>((resolve) => (finishStop = resolve));
    });
    try {
      process.emit('SIGTERM', 'SIGTERM');
      process.emit('SIGINT', 'SIGINT');
      expect(events).toEqual(['stop SIGTERM']); // the log is not flushed while the stop (a drain) runs
      finishStop();
      expect(await exit).toBe(0);
      expect(events).toEqual(['stop SIGTERM', 'flush']);
      expect(signalListenersSince(before)).toEqual([]);
    } finally {
      for (const [signal, listener] of signalListenersSince(before)) process.removeListener(signal, listener as () => void);
    }
  });

  it('a stop that fails is logged and exits 1, not an unhandled rejection', async () => {
    const before: SignalListeners = { SIGTERM: process.listeners('SIGTERM'), SIGINT: process.listeners('SIGINT') };
    const errors: Array<{ fields: object; message: string }> = [];
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      const exit = untilSignal({ flush: () => {}, error: (fields, message) => errors.push({ fields, message }) }, async () => {
        throw new Error('drain broke');
      });
      process.emit('SIGINT', 'SIGINT');
      expect(await exit).toBe(1);
      expect(errors).toEqual([{ fields: { err: 'drain broke' }, message: 'stop failed' }]);
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
      expect(signalListenersSince(before)).toEqual([]);
    } finally {
      process.removeListener('unhandledRejection', onUnhandled);
      for (const [signal, listener] of signalListenersSince(before)) process.removeListener(signal, listener as () => void);
    }
  });
});
