import { describe, expect, it } from 'vitest';
import { caConfigSchema } from '../../../src/config/ca-schema.ts';
import { ConfigError, parseConfigText } from '../../../src/config/load.ts';

const MINIMAL = `trustDomain: cluster.local
signing: { certFile: ca.pem, keyFile: ca.key }
trustBundle: { files: [root.pem] }
tokens: { issuers: [meshgate], publicKeyFile: token.pub.pem }
`;

function errorOf(yaml: string): string {
  try {
    parseConfigText(yaml, 'ca.yaml', caConfigSchema);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('ca.yaml schema', () => {
  it('fills the documented defaults', () => {
    const config = parseConfigText(MINIMAL, 'ca.yaml', caConfigSchema);
    expect(config.listen).toEqual({ address: '0.0.0.0', port: 15012 });
    expect(config.admin).toEqual({ address: '127.0.0.1', port: 15013 });
    expect(config.signing.chainFiles).toEqual([]);
    expect(config.serving).toEqual({ dnsNames: ['localhost', 'meshgate-ca'], ipAddresses: ['127.0.0.1', '::1'] });
    expect(config.tokens).toMatchObject({ audiences: ['meshgate-ca'], algorithms: ['ES256', 'RS256'], clockSkew: 30_000 });
    expect(config.leaf).toEqual({ ttl: 86_400_000, maxTtl: 172_800_000, keyTypes: ['ecdsa-p256', 'rsa-2048'] });
    expect(config.rateLimit.perIdentity).toEqual({ requests: 20, window: 60_000 });
    expect(config.audit.file).toBeUndefined();
    expect(Object.isFrozen(config.tokens)).toBe(true);
  });

  it.each([
    ['a bad trust domain', MINIMAL.replace('cluster.local', 'Cluster_Local'), 'ca.yaml: trustDomain: expected a trust domain'],
    ['no token key source', MINIMAL.replace(', publicKeyFile: token.pub.pem', ''), 'ca.yaml: tokens: expected exactly one of publicKeyFile, jwksFile, jwksUri'],
    ['alg none', MINIMAL.replace('issuers: [meshgate]', 'issuers: [meshgate], algorithms: [none]'), 'ca.yaml: tokens.algorithms[0]:'],
    ['HS256', MINIMAL.replace('issuers: [meshgate]', 'issuers: [meshgate], algorithms: [HS256]'), 'ca.yaml: tokens.algorithms[0]:'],
    ['a jwksUri that is not http(s)', MINIMAL.replace('publicKeyFile: token.pub.pem', 'jwksUri: "file:///etc/passwd"'), 'ca.yaml: tokens.jwksUri:'],
    ['an empty trust bundle', MINIMAL.replace('files: [root.pem]', 'files: []'), 'ca.yaml: trustBundle.files:'],
    ['a bad IP address', `${MINIMAL}serving: { ipAddresses: [localhost] }\n`, 'ca.yaml: serving.ipAddresses[0]: expected an IPv4 or IPv6 address'],
    ['an unknown key type', `${MINIMAL}leaf: { keyTypes: [rsa-1024] }\n`, 'ca.yaml: leaf.keyTypes[0]:'],
    ['ttl above maxTtl', `${MINIMAL}leaf: { ttl: 72h }\n`, 'ca.yaml: leaf: ttl must not exceed maxTtl'],
    ['a bad window', `${MINIMAL}rateLimit: { perIdentity: { window: 60 } }\n`, 'ca.yaml: rateLimit.perIdentity.window: expected a duration'],
    ['an unknown field', `${MINIMAL}tokens2: {}\n`, 'ca.yaml: tokens2: unknown field'],
    [
      'a JWKS token without a JWKS URL',
      MINIMAL.replace('publicKeyFile: token.pub.pem', 'publicKeyFile: token.pub.pem, jwksTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token'),
      'ca.yaml: tokens: jwksCaFile and jwksTokenFile need jwksUri',
    ],
    [
      'a JWKS token sent over plain http',
      MINIMAL.replace('publicKeyFile: token.pub.pem', 'jwksUri: "http://kubernetes.default.svc/openid/v1/jwks", jwksTokenFile: token'),
      'ca.yaml: tokens: jwksTokenFile needs an https jwksUri',
    ],
  ])('refuses %s with one line naming the field', (_name, yaml, expected) => {
    const message = errorOf(yaml);
    expect(message).toContain(expected);
    expect(message.split('\n')).toHaveLength(1);
  });
});
