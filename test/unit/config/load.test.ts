import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfigFile, parseConfigText } from '../../../src/config/load.ts';
import { resolveSidecarPaths } from '../../../src/config/sidecar-paths.ts';
import { sidecarConfigSchema } from '../../../src/config/sidecar-schema.ts';
import { readTextFile } from '../../../src/config/text-file.ts';

const VALID = 'workload: { service: orders }\ninbound: { app: "http://127.0.0.1:8080" }\nmtls: { mode: DISABLE }\n';

function problems(yaml: string): string[] {
  try {
    parseConfigText(yaml, 'sidecar.yaml', sidecarConfigSchema);
  } catch (err) {
    if (err instanceof ConfigError) return err.message.split('\n');
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('config files: bounded before they are parsed', () => {
  it('refuses a mapping with too many keys, naming the field and the limit', () => {
    const labels = Array.from({ length: 5000 }, (_, i) => `    k${i}: v`).join('\n');
    expect(problems(`${VALID.replace('workload: { service: orders }', `workload:\n  service: orders\n  labels:\n${labels}`)}`)).toEqual([
      'sidecar.yaml:4:5: workload.labels: too many keys: at most 1000 in one mapping (got 5000)',
    ]);
  });

  it('refuses a file with too many nodes from a lexer pass, quickly', () => {
    // 120k keys in 1 MiB: the quadratic duplicate-key check this replaces took about a minute.
    const labels = Array.from({ length: 120_000 }, (_, i) => `${i.toString(36)}: 1`).join(', ');
    const started = process.cpuUsage();
    expect(problems(`labels: {${labels}}\n`)).toEqual(['sidecar.yaml: too many YAML nodes: at most 100000 values, keys and collections in one file']);
    const cpu = process.cpuUsage(started);
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(3000); // CPU time: a busy machine stretches wall time
  });

  it('refuses a file over 1 MiB before parsing it', () => {
    expect(problems(`${VALID}# ${'x'.repeat(1_048_576)}\n`)).toEqual([expect.stringMatching(/^sidecar\.yaml: file too large: at most 1048576 bytes \(got \d+\)$/)]);
  });

  it('refuses a billion-laughs document with one line', () => {
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...'bcdefgh'.split('').map((c, i) => `${c}: &${c} [${Array(10).fill(`*${'abcdefgh'[i]}`).join(', ')}]`)].join('\n');
    expect(problems(`${bomb}\n`)).toEqual(['sidecar.yaml: (top level): Excessive alias count indicates a resource exhaustion attack (at most 100 alias expansions)']);
  });

  it('refuses more than one document', () => {
    expect(problems(`${VALID}---\n${VALID}`)).toEqual(['sidecar.yaml: too many documents: at most 1 in one file']);
  });
});

describe('config files: every problem, one line each', () => {
  it('gives the line and column of a YAML syntax error', () => {
    expect(problems('workload: { service: orders }\ninbound: { app: "http://127.0.0.1:8080"\nmtls: { mode: DISABLE }\n')).toEqual([
      'sidecar.yaml:3:1: invalid YAML: Flow map in block collection must be sufficiently indented and end with a }',
    ]);
  });

  it('names a number out of range by its text, not as null', () => {
    expect(problems(`${VALID}limits: { maxConnections: 1e400 }\n`)).toEqual(['sidecar.yaml:4:27: limits.maxConnections: not a finite number: 1e400']);
  });

  it('names a duplicate key with both lines', () => {
    expect(problems(`${VALID}drain: { timeout: 5s }\ndrain: { timeout: 6s }\n`)).toEqual(['sidecar.yaml:5:1: drain: Map keys must be unique ("drain" is also on line 4)']);
  });

  it('reports every schema problem of a file, not only the first', () => {
    expect(problems('workload: { service: 7 }\ninbound: { app: "http://127.0.0.1:8080" }\nmtls: { mode: WHAT }\nlistners: {}\nlimits: { maxConnections: "x", maxHeaderSize: 1 }\n')).toEqual([
      'sidecar.yaml: workload.service: expected string, got 7',
      'sidecar.yaml: limits.maxHeaderSize: Too small: expected number to be >=1024, got 1',
      'sidecar.yaml: limits.maxConnections: expected number, got "x"',
      'sidecar.yaml: mtls.mode: Invalid option: expected one of "STRICT"|"PERMISSIVE"|"DISABLE", got "WHAT"',
      'sidecar.yaml: listners: unknown field',
    ]);
  });

  it('caps the lines at 20, counting the rest', () => {
    const unknown = Array.from({ length: 30 }, (_, i) => `x${i}: 1`).join('\n');
    const lines = problems(`${VALID}${unknown}\n`);
    expect(lines).toHaveLength(20);
    expect(lines[18]).toBe('sidecar.yaml: x18: unknown field');
    expect(lines[19]).toBe('sidecar.yaml: ... and 11 more problems');
  });

  it('checks route regexes as policy regexes are checked', () => {
    const routes = '[{ match: { path: { regex: "/(a+)+" } } }, { match: { headers: [{ name: x, regex: "([a-z" }] } }, { match: { path: { regex: "/v[0-9]+/.*" } } }]';
    expect(problems(`${VALID}services: [{ name: pay, endpoints: [{ address: "127.0.0.1:1" }], routes: ${routes} }]\n`)).toEqual([
      'sidecar.yaml: services[0].routes[0].match.path.regex: regex can backtrack catastrophically (ambiguous repetition such as (a+)+ or (a|a)*); rewrite it so each character can match only one way, got "/(a+)+"',
      'sidecar.yaml: services[0].routes[1].match.headers[0].regex: not a valid regular expression (/([a-z/: Unterminated character class), got "([a-z"',
    ]);
  });
});

describe('config files: reading', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'meshgate-load-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('says a file is not UTF-8, with the line and column of the first bad byte', async () => {
    const file = path.join(dir, 'latin1.yaml');
    await writeFile(file, Buffer.from('workload: { service: orders }\n# caf\xe9\n', 'latin1'));
    await expect(loadConfigFile(file, sidecarConfigSchema)).rejects.toThrow(new ConfigError(`${file}: not UTF-8 text: byte 0xE9 at line 2, column 6 (save the file as UTF-8)`));
  });

  it('refuses a FIFO at once instead of waiting for a writer, and a device or folder', async () => {
    const fifo = path.join(dir, 'fifo.yaml');
    execFileSync('mkfifo', [fifo]);
    expect(await readTextFile(fifo, 1024)).toEqual({ ok: false, reason: 'not a regular file (a FIFO)' });
    expect(await readTextFile('/dev/zero', 1024)).toEqual({ ok: false, reason: 'not a regular file (a character device)' });
    expect(await readTextFile(dir, 1024)).toEqual({ ok: false, reason: 'is a folder, expected a file' });
  });

  it('reads no more than the limit of a file that is larger', async () => {
    const file = path.join(dir, 'big.yaml');
    await writeFile(file, 'x'.repeat(2048));
    expect(await readTextFile(file, 1024)).toEqual({ ok: false, reason: 'file too large: at most 1024 bytes (got 2048)' });
  });
});

describe('sidecar relative paths', () => {
  it("resolve against the config file's folder; absolute ones stay", () => {
    const config = parseConfigText(
      `${VALID.replace('mtls: { mode: DISABLE }', 'mtls: { mode: STRICT }')}identity: { ca: { address: "ca:15012", trustBundleFile: certs/bundle.pem }, tokenFile: /var/run/token }\n` +
        'listeners: { edge: { certFile: edge.pem, keyFile: ../keys/edge.key } }\npolicy: { servers: ["ps:15010"], stateDir: state }\nrateLimit: { redis: { url: "redis://r:6379", passwordFile: redis.pass } }\n',
      'sidecar.yaml',
      sidecarConfigSchema,
    );
    const resolved = resolveSidecarPaths(config, '/etc/meshgate');
    expect(resolved.identity).toMatchObject({ ca: { trustBundleFile: '/etc/meshgate/certs/bundle.pem' }, tokenFile: '/var/run/token' });
    expect(resolved.listeners.edge).toMatchObject({ certFile: '/etc/meshgate/edge.pem', keyFile: '/etc/keys/edge.key' });
    expect(resolved.policy?.stateDir).toBe('/etc/meshgate/state');
    expect(resolved.rateLimit.redis?.passwordFile).toBe('/etc/meshgate/redis.pass');
    expect(Object.isFrozen(resolved.identity)).toBe(true);
  });
});
