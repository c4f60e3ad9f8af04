import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCert } from '../helpers/mesh-pki.ts';
import { meshgateChild } from '../helpers/meshgate-cli.ts';
import { spawnMeshgate } from '../helpers/process.ts';

const meshgate = (args: string[]) => meshgateChild(args, { timeoutMs: 15_000 });

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
    ['request timeout shorter than the head timeout', `${VALID}limits: { headersTimeout: 10s, requestTimeout: 5s }\n`, 'limits.requestTimeout: must be at least limits.headersTimeout (10000 ms)'],
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
      'Excessive alias count indicates a resource exhaustion attack (at most 100 alias expansions)',
    ],
    ['an alias inside its own anchor', `workload: &w { service: *w }\ninbound: { app: "http://127.0.0.1:8080" }\nmtls: { mode: DISABLE }\n`, 'workload.service: expected string, got a mapping'],
    ['a key with a line break', `${VALID}"lim\\nits": {}\n`, '["lim\\nits"]: unknown field'],
    ['a key with a Unicode line separator', `${VALID}"lim\\u2028its": {}\n`, '["lim\\u2028its"]: unknown field'],
    ['a key that is a list', `${VALID}? [a, b]\n: 1\n`, 'a mapping key must be a plain value, not a list, mapping or alias'],
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

const BOMB = ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...'bcdefgh'.split('').map((c, i) => `${c}: &${c} [${Array(10).fill(`*${'abcdefgh'[i]}`).join(', ')}]`)].join('\n');

describe('meshgate: every bad input is one line per problem naming file and field, exit 2, never a stack', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshgate-cfg-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const write = async (name: string, content: string | Buffer): Promise<string> => {
    const file = join(dir, name);
    await writeFile(file, content);
    return file;
  };

  it.each(['sidecar', 'ca', 'policy-server'])('%s: a billion-laughs config', async (role) => {
    const file = await write(`bomb-${role}.yaml`, `${BOMB}\n`);
    expect(await meshgate([role, '--config', file])).toEqual({
      code: 2,
      stdout: '',
      stderr: `${file}: (top level): Excessive alias count indicates a resource exhaustion attack (at most 100 alias expansions)\n`,
    });
  });

  it('sidecar: route regexes are checked before the start (invalid, and catastrophic backtracking)', async () => {
    const routes = '[{ match: { path: { regex: "/(a+)+" } } }, { match: { path: { regex: "([a-z" } } }]';
    const file = await write('regex.yaml', `${VALID}services: [{ name: pay, endpoints: [{ address: "127.0.0.1:1" }], routes: ${routes} }]\n`);
    const { code, stderr } = await meshgate(['sidecar', '--config', file]);
    expect(code).toBe(2);
    expect(stderr.trim().split('\n')).toEqual([
      `${file}: services[0].routes[0].match.path.regex: regex can backtrack catastrophically (ambiguous repetition such as (a+)+ or (a|a)*); rewrite it so each character can match only one way, got "/(a+)+"`,
      `${file}: services[0].routes[1].match.path.regex: not a valid regular expression (/([a-z/: Unterminated character class), got "([a-z"`,
    ]);
  });

  it('sidecar: several mistakes are all reported, one line each', async () => {
    const file = await write('many.yaml', 'workload: { service: 7 }\ninbound: { app: "http://127.0.0.1:8080" }\nmtls: { mode: WHAT }\nlistners: {}\n');
    const { code, stderr } = await meshgate(['sidecar', '--config', file]);
    expect(code).toBe(2);
    expect(stderr.trim().split('\n')).toEqual([
      `${file}: workload.service: expected string, got 7`,
      `${file}: mtls.mode: Invalid option: expected one of "STRICT"|"PERMISSIVE"|"DISABLE", got "WHAT"`,
      `${file}: listners: unknown field`,
    ]);
  });

  it.each([
    [
      'a YAML syntax error, with its line and column',
      'workload: { service: orders }\ninbound: { app: "http://127.0.0.1:8080"\nmtls: { mode: DISABLE }\n',
      (f: string) => `${f}:3:1: invalid YAML: Flow map in block collection must be sufficiently indented and end with a }`,
    ],
    ['a number out of range', `${VALID}limits: { maxConnections: 1e400 }\n`, (f: string) => `${f}:4:27: limits.maxConnections: not a finite number: 1e400`],
    ['a file that is not UTF-8', Buffer.from('workload: { service: "caf\xe9" }\n', 'latin1'), (f: string) => `${f}: not UTF-8 text: byte 0xE9 at line 1, column 26 (save the file as UTF-8)`],
    ['a file over 1 MiB', `${VALID}# ${'x'.repeat(1_100_000)}\n`, (f: string) => `${f}: file too large: at most 1048576 bytes (got ${VALID.length + 1_100_003})`],
  ])('sidecar: %s', async (name, content, line) => {
    const file = await write(`${name.replaceAll(' ', '-')}.yaml`, content);
    expect(await meshgate(['sidecar', '--config', file])).toEqual({ code: 2, stdout: '', stderr: `${line(file)}\n` });
  });

  it('a FIFO or a device as a config or policy file: refused at once, no hang, no RangeError', async () => {
    const fifo = join(dir, 'fifo.yaml');
    execFileSync('mkfifo', [fifo]);
    expect(await meshgate(['sidecar', '--config', fifo])).toEqual({ code: 2, stdout: '', stderr: `${fifo}: not a regular file (a FIFO)\n` });
    expect(await meshgate(['policy', 'check', fifo])).toEqual({ code: 2, stdout: '', stderr: `meshgate policy check: ${fifo}: not a regular file (a FIFO)\n` });
    expect(await meshgate(['policy', 'check', '/dev/zero'])).toEqual({ code: 2, stdout: '', stderr: 'meshgate policy check: /dev/zero: not a regular file (a character device)\n' });
    expect(await meshgate(['ca', '--config', '/dev/zero'])).toEqual({ code: 2, stdout: '', stderr: '/dev/zero: not a regular file (a character device)\n' });
    expect(await meshgate(['token', '--sa', 'web', '--ns', 'shop', '--key', '/dev/zero'])).toEqual({
      code: 2,
      stdout: '',
      stderr: 'meshgate token: /dev/zero: not a regular file (a character device)\n',
    });
    expect(await meshgate(['policy', 'diff', '--old', dir, '--new', dir, '--requests', fifo])).toEqual({
      code: 2,
      stdout: '',
      stderr: `meshgate policy diff: --requests ${fifo}: not a regular file (a FIFO)\n`,
    });
  });

  it("sidecar: relative paths resolve against the config file's folder, wherever it is started from", async () => {
    const folder = join(dir, 'etc');
    await mkdir(folder);
    const cert = await issueCert({ spiffeId: 'spiffe://edge.example/ns/x/sa/gateway' });
    await writeFile(join(folder, 'edge.pem'), cert.certPem);
    await writeFile(join(folder, 'edge.key'), cert.keyPem);
    const ports = 'admin: { port: 0 }, inbound: { address: 127.0.0.1, port: 0 }, outbound: { port: 0 }';
    const file = join(folder, 'sidecar.yaml');
    await writeFile(file, `${VALID}listeners: { ${ports}, edge: { address: 127.0.0.1, port: 0, certFile: edge.pem, keyFile: edge.key } }\n`);
    // Started from another folder (the test's temporary root), where edge.pem does not exist.
    const sidecar = await spawnMeshgate(['sidecar', '--config', 'etc/sidecar.yaml'], { listening: 'sidecar listening', cwd: dir });
    await sidecar.kill();

    await writeFile(file, `${VALID}listeners: { ${ports}, edge: { address: 127.0.0.1, port: 0, certFile: missing.pem, keyFile: edge.key } }\n`);
    const missing = await meshgate(['sidecar', '--config', file]);
    expect(missing).toMatchObject({ code: 2, stderr: `${file}: listeners.edge.certFile: cannot read ${join(folder, 'missing.pem')} (ENOENT)\n` });
  });
});
