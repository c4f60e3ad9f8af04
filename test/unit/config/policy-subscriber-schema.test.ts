import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText } from '../../../src/config/load.ts';
import { defaultPolicyServerIdentity, policySubscriberConfigSchema } from '../../../src/config/policy-subscriber-schema.ts';
import { renderConfigReference } from '../../../src/config/reference.ts';

const parse = (yaml: string) => parseConfigText(yaml, 'policy.yaml', policySubscriberConfigSchema);

describe('policy subscriber config', () => {
  it('defaults: deny without policy, 5m staleness, policy-server name, /var/lib/meshgate', () => {
    const config = parse('servers: [policy-a:15010, policy-b:15010]\n');
    expect(config).toEqual({
      servers: ['policy-a:15010', 'policy-b:15010'],
      serverName: 'policy-server',
      stateDir: '/var/lib/meshgate',
      maxStaleness: 300_000,
      onNoPolicy: 'deny',
      holdEndpoints: 45_000,
      connectTimeout: 10_000,
      reconnect: { base: 500, max: 30_000 },
    });
    expect(Object.isFrozen(config)).toBe(true);
    expect(defaultPolicyServerIdentity('cluster.local')).toBe('spiffe://cluster.local/ns/meshgate-system/sa/policy-server');
  });

  it('parses durations, destinations and an explicit allow', () => {
    const config = parse(
      ['servers: ["[::1]:15010"]', 'maxStaleness: 90s', 'onNoPolicy: allow', 'destinations: [orders.shop]', 'reconnect: { base: 1s, max: 1m }', 'expectedIdentity: spiffe://corp/ns/x/sa/y'].join('\n'),
    );
    expect(config).toMatchObject({ maxStaleness: 90_000, onNoPolicy: 'allow', destinations: ['orders.shop'], reconnect: { base: 1_000, max: 60_000 }, expectedIdentity: 'spiffe://corp/ns/x/sa/y' });
  });

  it.each([
    ['servers: []', 'servers'],
    ['servers: [policy-server]', 'servers[0]'],
    ['servers: [a:1, a:1]', 'servers[1]'],
    ['servers: [a:1]\nonNoPolicy: open', 'onNoPolicy'],
    ['servers: [a:1]\nmaxStaleness: 5', 'maxStaleness'],
    ['servers: [a:1]\ndestinations: [orders]', 'destinations[0]'],
    ['servers: [a:1]\nexpectedIdentity: policy-server', 'expectedIdentity'],
    ['servers: [a:1]\nreconnect: { base: 2s, max: 1s }', 'reconnect.max'],
    ['servers: [a:1]\nextra: 1', 'extra'],
  ])('refuses %j naming %s', (yaml, field) => {
    expect(() => parse(yaml)).toThrow(ConfigError);
    expect(() => parse(yaml)).toThrow(new RegExp(`^policy\\.yaml: ${field.replace(/[[\]().]/g, '\\$&')}`));
  });

  it('describes every field for the generated reference', () => {
    const reference = renderConfigReference(policySubscriberConfigSchema);
    for (const field of ['servers', 'serverName', 'expectedIdentity', 'stateDir', 'maxStaleness', 'onNoPolicy', 'destinations', 'connectTimeout', 'reconnect.base', 'reconnect.max']) {
      expect(reference).toContain(`\`${field}\``);
    }
  });
});
