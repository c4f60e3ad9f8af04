// @peculiar/x509 resolves its ASN.1 codecs through tsyringe, which needs the
// Reflect metadata polyfill loaded first. It is the maintained X.509 library
// that builds and signs ECDSA P-256 certificates (node-forge signs RSA only):
// the CA's. A workload's own key material needs none of it (./key-material.ts).
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as never);

export type { KeyType } from './key-material.ts';
export { certificateFacts, createCsr, generateKeyPair, privateKeyToPem, splitPemBundle } from './key-material.ts';
export { x509 };
