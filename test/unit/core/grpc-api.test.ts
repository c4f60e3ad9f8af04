import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadGrpcApi } from '../../../src/core/grpc-api.ts';

const CA_PROTO = fileURLToPath(new URL('../../../proto/meshgate/ca/v1/ca.proto', import.meta.url));

describe('loadGrpcApi: a service of a .proto file as grpc-js takes it', () => {
  const api = loadGrpcApi(CA_PROTO, 'meshgate.ca.v1', 'CertificateAuthority');

  it('names each method by its full path, with camelCase client methods and server handler names', () => {
    expect(Object.keys(api.service)).toEqual(['Sign', 'GetTrustBundle']);
    expect(api.service.Sign).toMatchObject({ path: '/meshgate.ca.v1.CertificateAuthority/Sign', requestStream: false, responseStream: false, originalName: 'sign' });
    expect(api.service.GetTrustBundle?.originalName).toBe('getTrustBundle');
    expect(typeof api.Client.prototype.sign).toBe('function');
    expect(typeof api.Client.prototype.getTrustBundle).toBe('function');
  });

  it('reads messages as meshgate expects them: camelCase fields, defaults filled in, 64-bit integers as numbers', () => {
    const sign = api.service.Sign!;
    const response = sign.responseDeserialize(sign.responseSerialize({ certChainPem: ['leaf', 'intermediate'], notAfterUnix: 1_796_000_000 }));
    expect(response).toEqual({ certChainPem: ['leaf', 'intermediate'], trustBundlePem: [], spiffeId: '', serial: '', notAfterUnix: 1_796_000_000 });
    expect(sign.requestDeserialize(Buffer.alloc(0))).toEqual({ csrPem: '', ttlSeconds: 0 });
    expect(() => sign.requestSerialize([] as never)).toThrow(/expected object with SignRequest structure/);
  });

  it('refuses a service the file does not define', () => {
    expect(() => loadGrpcApi(CA_PROTO, 'meshgate.ca.v1', 'Nope')).toThrow(`${CA_PROTO} defines no service meshgate.ca.v1.Nope`);
    expect(() => loadGrpcApi(CA_PROTO, 'meshgate.ca.v1', 'SignRequest')).toThrow(/defines no service/);
  });
});
