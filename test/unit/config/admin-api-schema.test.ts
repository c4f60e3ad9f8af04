import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { adminApiConfigSchema } from '../../../src/config/admin-api-schema.ts';
import { ConfigError, parseConfigText } from '../../../src/config/load.ts';

const parse = (yaml: string) => parseConfigText(yaml, 'admin.yaml', adminApiConfigSchema);
const JWT = 'jwt: { issuers: [https://login.example.com], publicKeyFile: admin.pub.pem';

describe('adminApi config schema', () => {
  it('defaults to certificates only, no bindings (everything refused), a 256 KiB body cap', () => {
    expect(parse('{}')).toEqual({
      mtls: { enabled: true, trustDomains: [] },
      roleBindings: [],
      productionNamespaces: [],
      audit: { file: 'policy-audit.jsonl' },
      maxBodyBytes: 262_144,
    });
  });

  it('fills JWT defaults', () => {
    expect(parse(`${JWT} }`).jwt).toEqual({
      issuers: ['https://login.example.com'],
      audiences: ['meshgate-policy-admin'],
      publicKeyFile: 'admin.pub.pem',
      algorithms: ['ES256', 'RS256'],
      clockSkew: 30_000,
      subjectClaim: 'sub',
    });
  });

  it.each([
    [`${JWT}, algorithms: [HS256] }`, /^admin\.yaml: jwt\.algorithms\[0\]: /],
    [`${JWT}, algorithms: [none] }`, /^admin\.yaml: jwt\.algorithms\[0\]: /],
    [`${JWT}, jwksFile: jwks.json }`, /expected exactly one of publicKeyFile, jwksFile, jwksUri/],
    ['jwt: { issuers: [x] }', /expected exactly one of publicKeyFile, jwksFile, jwksUri/],
    ['jwt: { issuers: [x], jwksUri: "http://idp.example.com/jwks" }', /jwt\.jwksUri: expected an https:\/\/ URL/],
    ['roleBindings: [{ subjects: ["spiffe://*/ns/x"], role: admin }]', /roleBindings\[0\]\.subjects\[0\]: expected an exact value or a prefix ending in `\*`/],
    ['roleBindings: [{ subjects: [alice], role: owner }]', /roleBindings\[0\]\.role: /],
    ['roleBindings: [{ subjects: [], role: admin }]', /roleBindings\[0\]\.subjects: /],
    ['maxBodyBytes: 100GiB', /maxBodyBytes: expected at most 16MiB/],
    ['rbac: {}', /^admin\.yaml: rbac: unknown field$/],
  ])('refuses %s', (yaml, message) => {
    expect(() => parse(yaml)).toThrow(ConfigError);
    expect(() => parse(yaml)).toThrow(message);
  });

  it('accepts http JWKS only on a loopback address', () => {
    expect(parse('jwt: { issuers: [x], jwksUri: "http://127.0.0.1:8080/jwks" }').jwt?.jwksUri).toBe('http://127.0.0.1:8080/jwks');
  });

  it('accepts the README example', () => {
    const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('## Policy server admin API'));
    const block = /```yaml\n(adminApi:[\s\S]*?)```/.exec(section)?.[1];
    expect(block, 'README.md admin API section lost its adminApi example').toBeDefined();
    const config = parse(JSON.stringify((parseYaml(block!) as { adminApi: unknown }).adminApi));
    expect(config.roleBindings.map((b) => b.role)).toEqual(['admin', 'developer', 'viewer']);
  });
});
