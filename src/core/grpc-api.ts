import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** One gRPC service of a .proto file: what a server adds and what a client is built from. */
export interface GrpcApi {
  /** Handed to grpc.Server#addService. */
  readonly service: grpc.ServiceDefinition;
  readonly Client: grpc.ServiceClientConstructor;
}

/** Field names in camelCase, 64-bit integers as numbers, enums as their names, defaults filled in: the same on every API. */
const PROTO_LOADER_OPTIONS: protoLoader.Options = Object.freeze({
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});

/** Loads the service `name` of package `pkg` (e.g. meshgate.ca.v1) from `protoFile`. */
export function loadGrpcApi(protoFile: string, pkg: string, name: string): GrpcApi {
  const definition = protoLoader.loadSync(protoFile, PROTO_LOADER_OPTIONS);
  let node: unknown = grpc.loadPackageDefinition(definition);
  for (const part of [...pkg.split('.'), name]) node = (node as Record<string, unknown> | undefined)?.[part];
  if (typeof node !== 'function') throw new Error(`${protoFile} defines no service ${pkg}.${name}`);
  const Client = node as grpc.ServiceClientConstructor;
  return { service: Client.service, Client };
}
