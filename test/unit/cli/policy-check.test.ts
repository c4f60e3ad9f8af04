import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { meshgateInProcess as meshgate } from '../../helpers/meshgate-cli.ts';
import { doc } from '../policy/helpers.ts';

describe('meshgate policy check', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshgate-policy-check-'));
    await mkdir(join(dir, 'good', 'shop'), { recursive: true });
    await writeFile(
      join(dir, 'good', 'shop', 'authz.yaml'),
      `${doc('AuthorizationPolicy', 'rules: [{ to: [{ methods: [GET] }] }]', '{ name: a, namespace: shop }')}---\n${doc('IPAccessPolicy', 'deny: [10.0.0.0/8]', '{ name: b, namespace: shop }')}`,
    );
    await writeFile(join(dir, 'good', 'route.yml'), doc('Route', 'service: orders\nroutes: [{ match: { path: { prefix: /v2 } }, timeout: 2s }]', '{ name: r, namespace: shop }'));
    await mkdir(join(dir, 'bad'));
    await writeFile(
      join(dir, 'bad', 'mixed.yaml'),
      [
        doc('AuthorizationPolicy', '{}', '{ name: ok, namespace: shop }'),
        doc('AuthorizationPolicy', 'action: PERMIT', '{ name: typo, namespace: shop }'),
        doc('Route', 'service: orders\nroutes: [{ match: { path: { regex: "(a+)+$" } } }]', '{ name: redos, namespace: shop }'),
      ].join('---\n'),
    );
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exits 0 and counts the documents when all are valid', async () => {
    expect(await meshgate(['policy', 'check', join(dir, 'good')])).toEqual({ code: 0, stdout: '3 documents valid\n', stderr: '' });
  });

  it('checks one file too', async () => {
    expect(await meshgate(['policy', 'check', join(dir, 'good', 'route.yml')])).toEqual({ code: 0, stdout: '1 document valid\n', stderr: '' });
  });

  it('exits 1 with one line per invalid document', async () => {
    const file = join(dir, 'bad', 'mixed.yaml');
    expect(await meshgate(['policy', 'check', join(dir, 'bad')])).toEqual({
      code: 1,
      stdout: '',
      stderr: [
        `${file}: document 1 (AuthorizationPolicy/shop/typo): spec.action: expected one of ALLOW, DENY, AUDIT, got "PERMIT"`,
        `${file}: document 2 (Route/shop/redos): spec.routes[0].match.path.regex: regex can backtrack catastrophically (ambiguous repetition such as (a+)+ or (a|a)*); rewrite it so each character can match only one way`,
        '',
      ].join('\n'),
    });
  });

  it('refuses throttle on a global RateLimitPolicy rule, naming the file, the field and why', async () => {
    await mkdir(join(dir, 'throttle'));
    const file = join(dir, 'throttle', 'limits.yaml');
    await writeFile(
      file,
      doc('RateLimitPolicy', 'rules: [{ name: shared, key: [source.ip], limit: { requests: 10, per: 1s }, scope: global, throttle: { queue: 5, maxDelay: 1s } }]', '{ name: limits, namespace: shop }'),
    );
    expect(await meshgate(['policy', 'check', join(dir, 'throttle')])).toEqual({
      code: 1,
      stdout: '',
      stderr: `${file}: document 0 (RateLimitPolicy/shop/limits): spec.rules[0].throttle: only applies to scope: local (a global bucket is shared through Redis; its callers cannot wait in one sidecar's queue)\n`,
    });
  });

  it('checks the examples of checks of your own, and names file, line and column of one that does not compile', async () => {
    const examples = join(import.meta.dirname, '../../../deploy/examples/filters');
    expect(await meshgate(['policy', 'check', examples])).toEqual({ code: 0, stdout: '4 documents valid\n', stderr: '' });
    await mkdir(join(dir, 'filters'));
    await writeFile(join(dir, 'filters', 'check.ts'), 'export default function check(call: { path: string }) {\n  return { allow: call.path.startsWith("/" };\n}\n');
    await writeFile(join(dir, 'filters', 'check.yaml'), doc('Filter', 'sourceFile: check.ts', '{ name: own, namespace: shop }'));
    // One file checked alone reads its source file beside it.
    expect(await meshgate(['policy', 'check', join(dir, 'filters', 'check.yaml')])).toEqual({
      code: 1,
      stdout: '',
      stderr: `${join(dir, 'filters', 'check.yaml')}: document 0 (Filter/shop/own): spec.sourceFile: check.ts: line 2, column 44: Expected ',', got '}'\n`,
    });
  });

  it.each([
    ['no DIR', ['policy', 'check'], 'meshgate policy check: missing DIR\n'],
    ['a missing DIR', ['policy', 'check', '/nonexistent/policies'], 'meshgate policy check: /nonexistent/policies: no such file or folder\n'],
    ['two DIRs', ['policy', 'check', 'a', 'b'], 'meshgate policy check: expected one DIR or FILE, got 2\n'],
    ['no subcommand', ['policy'], 'meshgate policy: expected "check", "explain" or "diff", got nothing (try meshgate policy --help)\n'],
  ])('exits 2 on a usage error: %s', async (_name, args, stderr) => {
    expect(await meshgate(args)).toEqual({ code: 2, stdout: '', stderr });
  });

  it('exits 2 on an unknown flag', async () => {
    const { code, stderr } = await meshgate(['policy', 'check', '--strict', 'a']);
    expect(code).toBe(2);
    expect(stderr).toMatch(/^meshgate policy: Unknown option '--strict'/);
  });

  it('has --help', async () => {
    const { code, stdout } = await meshgate(['policy', 'check', '--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^Usage: meshgate policy check DIR\|FILE\n/);
    expect((await meshgate(['--help'])).stdout).toContain('policy check DIR');
  });
});
