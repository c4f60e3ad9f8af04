import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfigFile, parseConfigText } from '../../../src/config/load.ts';
import { policyServerConfigSchema } from '../../../src/config/policy-server-schema.ts';

const minimal = 'identity:\n  ca: { address: "ca:15012", trustBundleFile: tb.pem }\npolicies: { folder: policies }\n';

describe('policy-server config', () => {
  it('fills the documented defaults', () => {
    const config = parseConfigText(minimal, 'ps.yaml', policyServerConfigSchema);
    expect(config.listen).toEqual({ address: '0.0.0.0', port: 15010 });
    expect(config.admin).toEqual({ address: '127.0.0.1', port: 15014, tls: false });
    expect(config.identity).toMatchObject({
      trustDomain: 'cluster.local',
      serviceAccount: 'policy-server',
      ca: { serverName: 'meshgate-ca', timeout: 5_000 },
      retry: { base: 200, max: 30_000, probeInterval: 500 },
    });
    expect(config.policies).toEqual({ folder: 'policies', pollFallback: 2_000, settle: 100 });
    expect(config.push).toEqual({ debounce: 50, helloTimeout: 10_000, maxSubscribers: 20_000 });
    expect(config.registry).toEqual({ static: [], warmup: 45_000, shared: { enabled: true, lease: 30_000 } });
    expect(config.serverId).toBeUndefined();
    expect(Object.isFrozen(config.registry.shared)).toBe(true);
  });

  it('accepts the example in deploy/examples', async () => {
    const config = await loadConfigFile(new URL('../../../deploy/examples/policy-server.yaml', import.meta.url).pathname, policyServerConfigSchema);
    expect(config.registry.static.map((s) => `${s.name}.${s.namespace}`)).toEqual(['payments-gateway.external', 'legacy-orders.shop']);
    expect(config.registry.static[0]!.endpoints[0]).toEqual({ address: 'payments.example.com:443', labels: {}, weight: 1 });
  });

  it('names the file, the field and the problem', () => {
    const bad = (text: string): string => {
      try {
        parseConfigText(text, 'ps.yaml', policyServerConfigSchema);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error('expected a ConfigError');
    };
    expect(bad('policies: { folder: p }\n')).toBe('ps.yaml: identity: missing required field (expected object)');
    expect(bad(`${minimal}registry:\n  static:\n    - { name: a, namespace: b }\n    - { name: a, namespace: b }\n`)).toBe('ps.yaml: registry.static[1].name: a.b is listed twice, got "a"');
    expect(bad(`${minimal}registry:\n  static:\n    - { name: a, endpoints: [{ address: nope }] }\n`)).toBe(
      'ps.yaml: registry.static[0].endpoints[0].address: expected host:port, e.g. 10.0.0.7:15006 or [::1]:443, got "nope"',
    );
    expect(bad(`${minimal}push: { debounce: fast }\n`)).toBe('ps.yaml: push.debounce: expected a duration like 250ms, 5s, 2m or 1h, got "fast"');
    expect(bad(`${minimal}listen: { port: 15010, tls: true }\n`)).toBe('ps.yaml: listen.tls: unknown field');
  });

  it('store: folder by default; store: redis needs a redis: section, with Sentinel and TLS optional', () => {
    expect(parseConfigText(minimal, 'ps.yaml', policyServerConfigSchema).store).toBe('folder');
    const bad = (text: string): string => {
      try {
        parseConfigText(text, 'ps.yaml', policyServerConfigSchema);
      } catch (err) {
        return (err as Error).message;
      }
      throw new Error('expected a ConfigError');
    };
    expect(bad(`${minimal}store: redis\n`)).toBe('ps.yaml: redis: store: redis needs a redis: section (at least url)');
    expect(bad(`${minimal}store: etcd\n`)).toMatch(/^ps\.yaml: store: /);
    expect(bad(`${minimal}store: redis\nredis: { url: "http://r:6379" }\n`)).toMatch(/^ps\.yaml: redis\.url: expected redis:\/\/host:port\[\/db\] or rediss:\/\/ for TLS/);
    const config = parseConfigText(
      `${minimal}store: redis\nredis:\n  url: rediss://redis.example:6380/2\n  username: policy\n  passwordFile: redis.pass\n  sentinel: { name: mesh, addresses: ["10.0.0.1:26379", "[::1]:26379"] }\n`,
      'ps.yaml',
      policyServerConfigSchema,
    );
    expect(config.redis).toEqual({
      url: 'rediss://redis.example:6380/2',
      username: 'policy',
      passwordFile: 'redis.pass',
      sentinel: { name: 'mesh', addresses: ['10.0.0.1:26379', '[::1]:26379'] },
      keyPrefix: 'meshgate:ps:',
      timeout: 2_000,
      lease: 15_000,
    });
  });
});
