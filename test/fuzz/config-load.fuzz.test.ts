import fc from 'fast-check';
import { expect } from 'vitest';
import { parse as parseYaml, stringify } from 'yaml';
import { caConfigSchema } from '../../src/config/ca-schema.ts';
import { ConfigError, parseConfigText } from '../../src/config/load.ts';
import { policyServerConfigSchema } from '../../src/config/policy-server-schema.ts';
import { sidecarConfigSchema } from '../../src/config/sidecar-schema.ts';
import { fuzzTarget, timeBudgetMs, timed } from './fuzz-harness.ts';
import { aliasBombLines, editedText, YAML_PIECES } from './text-arbitraries.ts';

/*
 * Fuzzing the config loader (src/config/load.ts) with the schemas of the three
 * roles. Whatever the file says, loading gives a frozen config or a
 * ConfigError of one line naming the file (what `meshgate ... --config` prints
 * before exiting 2): never another exception, never a stack, never a hang.
 */

const SCHEMAS = { sidecar: sidecarConfigSchema, ca: caConfigSchema, 'policy-server': policyServerConfigSchema } as const;
type Role = keyof typeof SCHEMAS;

/** Valid files of each role: the mutations start from these. */
const VALID: Record<Role, string> = {
  sidecar: `workload: { service: orders, namespace: shop, labels: { version: v1 } }
listeners:
  outbound: { address: 127.0.0.1, port: 15001 }
  inbound: { address: 0.0.0.0, port: 15006 }
  admin: { port: 15000 }
inbound: { app: "http://127.0.0.1:8080", timeout: 15s }
mtls: { mode: STRICT }
identity:
  trustDomain: cluster.local
  ca: { address: "ca:15012", trustBundleFile: /etc/meshgate/bundle.pem }
  tokenFile: /var/run/token
policy: { servers: ["policy:15010"], stateDir: /var/lib/meshgate }
services:
  - name: payments
    endpoints: [{ address: "10.0.0.5:8080", labels: { version: v2 } }]
    routes: [{ timeout: 2s, retries: { attempts: 2 } }]
limits: { maxHeaderSize: 16384, idleTimeout: 60s }
log: { level: info, accessLog: true }
`,
  ca: `trustDomain: cluster.local
listen: { address: 0.0.0.0, port: 15012 }
admin: { port: 15013 }
signing: { certFile: root-ca.pem, keyFile: root-ca.key }
trustBundle: { files: [root-ca.pem] }
tokens: { issuers: [meshgate], publicKeyFile: token-signing.pub.pem }
leaf: { ttl: 1h, maxTtl: 24h }
rateLimit: { perIdentity: { requests: 20, window: 1m } }
`,
  'policy-server': `listen: { address: 0.0.0.0, port: 15010 }
admin: { port: 15014 }
policies: { folder: ./policies }
identity:
  trustDomain: cluster.local
  ca: { address: "ca:15012", trustBundleFile: bundle.pem }
  tokenFile: token
`,
};

const TEXT_PIECES = [
  ...YAML_PIECES,
  '\r\n',
  '\r',
  '\t',
  '-',
  '&b [*a, *a, *a]',
  '!!str ',
  '!!int ',
  '!!map ',
  '!custom ',
  '---\n',
  '...\n',
  '%YAML 1.2\n',
  '<<: *a',
  '\u0085',
  'true',
  '0x1F',
  '-0',
  '.inf',
  '99999999999999999999',
  '0o17',
  '2001-12-14',
  '"\\u0000"',
  '"a\\nb"',
  'constructor',
  'prototype',
];

/** A valid file with random edits: insertions, deletions, a replaced range. */
const mutatedText = (role: Role) => editedText(VALID[role], { pieces: TEXT_PIECES, maxRemove: 12, maxInsert: 8, maxEdits: 8 });

/** Documents that are hard on a loader: alias bombs, self-references, deep nesting, odd keys. */
const hostileText = fc.oneof(
  fc.integer({ min: 2, max: 12 }).map((width) => `${aliasBombLines(width).join('\n')}\nworkload: *a8\n`),
  fc.constantFrom('a: &a [*a]\n', 'workload: &w { service: *w }\n', 'x: &x { y: *x }\nworkload: *x\n', '<<: [*a]\n', 'a: &a {b: 1}\n<<: *a\n<<: *a\n'),
  fc.integer({ min: 10, max: 3000 }).map((depth) => `workload: ${'['.repeat(depth)}${']'.repeat(depth)}\n`),
  fc.integer({ min: 10, max: 3000 }).map((depth) => `workload: ${'{a: '.repeat(depth)}1${'}'.repeat(depth)}\n`),
  fc
    .tuple(fc.string({ unit: 'binary', maxLength: 20 }), fc.jsonValue({ maxDepth: 3 }))
    .map(([key, value]) => `${stringify({ workload: { service: 'x' }, inbound: { app: 'http://a' }, mtls: { mode: 'DISABLE' }, [key]: value })}`),
  fc.integer({ min: 1000, max: 200_000 }).map((n) => `workload: { service: ${'x'.repeat(n)} }\n`),
);

/** Random values in a valid file's shape: the schema sees wrong types at every level. */
const wrongShapes = (role: Role) =>
  fc.jsonValue({ maxDepth: 4 }).chain((value) => fc.constantFrom(...Object.keys(parseConfigObject(role))).map((key) => stringify({ ...parseConfigObject(role), [key]: value })));

function parseConfigObject(role: Role): Record<string, unknown> {
  return JSON.parse(JSON.stringify(parseYaml(VALID[role]))) as Record<string, unknown>;
}

interface ConfigInput {
  role: Role;
  text: string;
}

const roleArb = fc.constantFrom<Role>('sidecar', 'ca', 'policy-server');

fuzzTarget<ConfigInput>({
  name: 'config-load',
  arbitrary: roleArb.chain((role) =>
    fc.record({
      role: fc.constant(role),
      text: fc.oneof({ weight: 5, arbitrary: mutatedText(role) }, { weight: 2, arbitrary: hostileText }, { weight: 2, arbitrary: wrongShapes(role) }),
    }),
  ),
  shortRuns: 600,
  shortMs: 3000,
  check({ role, text }) {
    const file = `/etc/meshgate/${role}.yaml`;
    const { value: outcome, ms } = timed(() => {
      try {
        return { config: parseConfigText(text, file, SCHEMAS[role]) };
      } catch (err) {
        return { err };
      }
    });
    expect(ms, `loading ${text.length} characters took ${ms.toFixed(0)} ms`).toBeLessThan(timeBudgetMs(text.length));
    if ('config' in outcome) {
      expect(Object.isFrozen(outcome.config)).toBe(true);
      return;
    }
    const err = outcome.err as Error;
    expect(err, `${err?.constructor?.name}: ${err?.message}`).toBeInstanceOf(ConfigError);
    // One line per problem (at most 20), each naming the file first, no stack: what the CLI prints before exiting 2.
    const lines = err.message.split('\n');
    expect(lines.length, err.message).toBeLessThanOrEqual(20);
    for (const line of lines) {
      expect(line.startsWith(`${file}:`), line).toBe(true);
      expect(line, 'one line per problem').not.toMatch(/[\r\u0085\u2028\u2029]/);
      expect(line).not.toMatch(/\s+at \S+ \(/);
      expect(line.length, line).toBeLessThan(400);
    }
  },
});
