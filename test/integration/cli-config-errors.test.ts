import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '../../bin/meshgate.js');

async function meshgate(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { timeout: 15_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const VALID = `workload: { service: orders }\ninbound: { app: "http://127.0.0.1:8080" }\nmtls: { mode: DISABLE }\n`;

describe('meshgate sidecar: a bad config file exits 2 with one line naming file, field and problem', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshgate-cfg-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const cases: Array<[string, string, string]> = [
    ['unknown key', `${VALID}listners: {}\n`, 'listners: unknown field'],
    ['unknown nested key', `${VALID}limits: { maxHeaderSise: 10 }\n`, 'limits.maxHeaderSise: unknown field'],
    ['missing required section', `workload: { service: orders }\nmtls: { mode: DISABLE }\n`, 'inbound: missing required field (expected object)'],
    ['mTLS without identity', `workload: { service: orders }\ninbound: { app: "http://127.0.0.1:8080" }\n`, 'identity: missing required field (mtls.mode is STRICT'],
    ['missing required field', `inbound: { app: "http://127.0.0.1:8080" }\n`, 'workload: missing required field (expected object)'],
    ['wrong type', `${VALID}limits: { maxConnections: "many" }\n`, 'limits.maxConnections: expected number, got "many"'],
    ['bad duration', `${VALID}drain: { timeout: 5 }\n`, 'drain.timeout: expected a duration like 250ms, 5s, 2m or 1h, got 5'],
    [
      'bad endpoint address',
      `${VALID}services: [{ name: pay, endpoints: [{ address: "localhost" }] }]\n`,
      'services[0].endpoints[0].address: expected host:port, e.g. 127.0.0.1:8080 or [::1]:8080, got "localhost"',
    ],
    [
      'route backend naming an unknown service',
      `${VALID}services: [{ name: pay, endpoints: [{ address: "127.0.0.1:1" }], routes: [{ backends: [{ service: ghost }] }] }]\n`,
      'services[0].routes[0].backends[0].service: unknown service "ghost.default"',
    ],
    ['invalid YAML', `workload: [\n`, 'invalid YAML'],
    // Found by test/fuzz/config-load.fuzz.test.ts: each used to print a stack trace or more than one line.
    [
      'an alias bomb',
      `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n${VALID}`,
      'invalid YAML: Excessive alias count indicates a resource exhaustion attack (at most 100 alias expansions)',
    ],
    ['an alias inside its own anchor', `workload: &w { service: *w }\ninbound: { app: "http://127.0.0.1:8080" }\nmtls: { mode: DISABLE }\n`, 'workload.service: expected string, got a value that contains itself'],
    ['a key with a line break', `${VALID}"lim\\nits": {}\n`, '["lim\\nits"]: unknown field'],
    ['a key with a Unicode line separator', `${VALID}"lim\\u2028its": {}\n`, '["lim\\u2028its"]: unknown field'],
    ['a key that is a list', `${VALID}? [a, b]\n: 1\n`, '["[ a, b ]"]: unknown field'],
  ];

  for (const [name, yaml, expected] of cases) {
    it(name, async () => {
      const file = join(dir, `${name.replaceAll(' ', '-')}.yaml`);
      await writeFile(file, yaml);
      const { code, stderr } = await meshgate(['sidecar', '--config', file]);
      expect(code).toBe(2);
      const lines = stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(file);
      expect(lines[0]).toContain(expected);
    });
  }

  it('a missing file or flag exits non-zero with one line', async () => {
    const missing = await meshgate(['sidecar', '--config', join(dir, 'nope.yaml')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim()).toBe(`${join(dir, 'nope.yaml')}: cannot read file (no such file)`);
    const noFlag = await meshgate(['sidecar']);
    expect(noFlag).toMatchObject({ code: 2, stderr: 'meshgate sidecar: missing --config FILE\n' });
    const badCommand = await meshgate(['sidecra']);
    expect(badCommand.code).toBe(2);
    expect(badCommand.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('every command has --help', async () => {
    for (const command of ['sidecar', 'demo']) {
      const { code, stdout } = await meshgate([command, '--help']);
      expect(code).toBe(0);
      expect(stdout).toContain(`meshgate ${command}`);
    }
  });
});
