import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { meshgateInProcess as meshgate, meshgateChild } from '../../helpers/meshgate-cli.ts';

/*
 * The meshgate command as a user meets it before anything starts: help, the
 * version, and usage errors (a missing file or flag, a bad value) as one line
 * on stderr with exit code 2 and nothing on stdout.
 */

const SIDECAR_YAML = 'workload: { service: orders }\ninbound: { app: "http://127.0.0.1:8080" }\nmtls: { mode: DISABLE }\nlog: { level: silent }\n';

describe('meshgate help and version', () => {
  it('with no command, --help or -h prints the command list and exits 0', async () => {
    const none = await meshgate([]);
    expect(none.code).toBe(0);
    expect(none.stdout).toMatch(/^meshgate: a service-mesh sidecar proxy and its control plane\n\nUsage: meshgate <command> \[options\]\n/);
    expect(none.stderr).toBe('');
    expect(await meshgate(['--help'])).toEqual(none);
    expect(await meshgate(['-h'])).toEqual(none);
    expect(await meshgate(['help'])).toEqual(none);
    expect(await meshgate(['help', 'no-such-command'])).toEqual(none);
  });

  it('--version prints the version', async () => {
    expect(await meshgate(['--version'])).toEqual({ code: 0, stdout: 'meshgate 0.1.0\n', stderr: '' });
  });

  it('every command in the list has --help, which names it and exits 0', async () => {
    const list = (await meshgate(['--help'])).stdout;
    // A command line of the list: two spaces, the command (one or two words), then its flags or text.
    const commands = [...list.matchAll(/^ {2}([a-z-]+(?: [a-z]+)?)\b/gm)].map((m) => m[1]!.split(' ')).filter(([first]) => first !== 'help');
    expect(commands.map((words) => words.join(' '))).toEqual(
      expect.arrayContaining(['sidecar', 'ca', 'policy-server', 'certs init', 'certs webhook', 'token', 'inject', 'injector', 'policy check', 'policy explain', 'iptables', 'policy diff', 'demo']),
    );
    for (const words of commands) {
      const { code, stdout, stderr } = await meshgate([...words, '--help']);
      expect({ words, code, stderr, usage: stdout.startsWith('Usage: meshgate ') }).toEqual({ words, code: 0, stderr: '', usage: true });
      expect(stdout).toContain(`meshgate ${words.join(' ')}`);
    }
  });

  it('help COMMAND is COMMAND --help; a subcommand has its own page', async () => {
    expect(await meshgate(['help', 'sidecar'])).toEqual(await meshgate(['sidecar', '--help']));
    expect((await meshgate(['sidecar', '-h'])).stdout).toMatch(/^Usage: meshgate sidecar --config FILE/);
    expect((await meshgate(['policy', 'explain', '--help'])).stdout).toMatch(/^Usage: meshgate policy explain /);
    expect((await meshgate(['policy', 'diff', '--help'])).stdout).toMatch(/^Usage: meshgate policy diff /);
  });
});

describe('meshgate usage errors: one line on stderr, exit 2, nothing on stdout', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshgate-cli-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each([
    ['an unknown command', ['sidecra'], 'meshgate: unknown command "sidecra" (try meshgate --help)'],
    ['sidecar without --config', ['sidecar'], 'meshgate sidecar: missing --config FILE'],
    ['ca without --config', ['ca'], 'meshgate ca: missing --config FILE'],
    ['policy-server without --config', ['policy-server'], 'meshgate policy-server: missing --config FILE'],
    ['an empty --config', ['sidecar', '--config', ''], 'meshgate sidecar: missing --config FILE'],
    ['--config without its value', ['ca', '--config'], "meshgate ca: Option '-c, --config <value>' argument missing"],
    ['an unknown flag', ['sidecar', '--bogus'], "meshgate sidecar: Unknown option '--bogus'"],
    ['certs without a subcommand', ['certs'], 'meshgate certs: expected "init" or "webhook", got nothing (try meshgate certs --help)'],
    ['certs with an unknown subcommand', ['certs', 'create'], 'meshgate certs: expected "init" or "webhook", got "create" (try meshgate certs --help)'],
    ['certs init with a bad --key-type', ['certs', 'init', '--key-type', 'dsa'], 'meshgate certs init: --key-type: expected ecdsa-p256 or rsa-2048, got "dsa"'],
    [
      'certs init with a bad --trust-domain',
      ['certs', 'init', '--trust-domain', 'Bad_Domain'],
      'meshgate certs init: --trust-domain: expected lower-case letters, digits, dots and dashes, got "Bad_Domain"',
    ],
    ['certs init with a zero --root-ttl', ['certs', 'init', '--root-ttl', '0'], 'meshgate certs init: --root-ttl: expected a duration like 30m, 24h or 87600h, got "0"'],
    ['token without --sa', ['token', '--ns', 'shop'], 'meshgate token: missing --sa NAME'],
    ['token without --ns', ['token', '--sa', 'web'], 'meshgate token: missing --ns NAMESPACE'],
    ['token with a bad --ttl', ['token', '--sa', 'web', '--ns', 'shop', '--ttl', 'forever'], 'meshgate token: --ttl: expected a duration like 30m, 24h or 87600h, got "forever"'],
    ['policy without a subcommand', ['policy'], 'meshgate policy: expected "check", "explain" or "diff", got nothing (try meshgate policy --help)'],
    ['inject without -f', ['inject'], 'meshgate inject: missing -f FILE'],
    ['injector without --config', ['injector'], 'meshgate injector: missing --config FILE'],
    ['demo with a --calls that is not a number', ['demo', '--calls', 'many'], 'meshgate demo: --calls: expected a whole number from 1 to 1000, got "many"'],
    ['demo with --calls 0', ['demo', '--calls', '0'], 'meshgate demo: --calls: expected a whole number from 1 to 1000, got "0"'],
  ])('%s', async (_name, args, line) => {
    expect(await meshgate(args)).toEqual({ code: 2, stdout: '', stderr: `${line}\n` });
  });

  it('a missing --config file or token key names the file', async () => {
    const missing = join(dir, 'nope.yaml');
    for (const role of ['sidecar', 'ca', 'policy-server']) {
      expect(await meshgate([role, '--config', missing])).toEqual({ code: 2, stdout: '', stderr: `${missing}: cannot read file (no such file)\n` });
    }
    const key = join(dir, 'nope.key');
    expect(await meshgate(['token', '--sa', 'web', '--ns', 'shop', '--key', key])).toEqual({ code: 2, stdout: '', stderr: `meshgate token: ${key}: cannot read file (no such file)\n` });
  });

  it("each role reads its file with its own schema: a sidecar's file given to ca or policy-server is refused, one line per field", async () => {
    const file = join(dir, 'sidecar.yaml');
    await writeFile(file, SIDECAR_YAML);
    const ca = await meshgate(['ca', '--config', file]);
    expect(ca.code).toBe(2);
    expect(ca.stdout).toBe('');
    expect(ca.stderr.trimEnd().split('\n')).toEqual(expect.arrayContaining([`${file}: trustDomain: missing required field (expected string)`, `${file}: workload: unknown field`]));
    const policyServer = await meshgate(['policy-server', '--config', file]);
    expect(policyServer.code).toBe(2);
    expect(policyServer.stderr.trimEnd().split('\n')).toEqual(expect.arrayContaining([`${file}: policies: missing required field (expected object)`, `${file}: workload: unknown field`]));
    for (const line of [...ca.stderr.trimEnd().split('\n'), ...policyServer.stderr.trimEnd().split('\n')]) expect(line.startsWith(`${file}: `)).toBe(true);
  });
});

describe('meshgate as a process', () => {
  let dir: string;
  let holder: net.Server;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshgate-cli-'));
    holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    await new Promise((resolve) => holder.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  it('a port in use exits 1 with one line naming the address, and the process ends though other listeners were open', async () => {
    const { port } = holder.address() as net.AddressInfo;
    const file = join(dir, 'busy.yaml');
    await writeFile(file, `${SIDECAR_YAML}listeners: { admin: { address: 127.0.0.1, port: ${port} }, inbound: { address: 127.0.0.1, port: 0 }, outbound: { address: 127.0.0.1, port: 0 } }\n`);
    // A child process: what is checked is that bin/meshgate.js exits (code 1) instead of hanging on a listener.
    expect(await meshgateChild(['sidecar', '--config', file])).toEqual({ code: 1, stdout: '', stderr: `meshgate sidecar: address in use: 127.0.0.1:${port}\n` });
  });

  it('a usage error exits 2 from the real binary too', async () => {
    expect(await meshgateChild(['sidecra'])).toEqual({ code: 2, stdout: '', stderr: 'meshgate: unknown command "sidecra" (try meshgate --help)\n' });
  });
});
