import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

/** One gRPC service of a .proto file: what a server adds and what a client is built from. */
export interface GrpcApi {
  /** Handed to grpc.Server#addService. */
  readonly service: grpc.ServiceDefinition;
  readonly Client: grpc.ServiceClientConstructor;
}

/** Field names in camelCase (at parse), 64-bit integers as numbers, enums as their names, defaults filled in: the same on every API. */
const TO_OBJECT: protobuf.IConversionOptions = Object.freeze({ longs: Number, enums: String, defaults: true, oneofs: true });

/**
 * Loads the service `name` of package `pkg` (e.g. meshgate.ca.v1) from `protoFile`.
 *
 * The service definition is built here from protobufjs's reflection rather
 * than by @grpc/proto-loader: the loader also encodes a FileDescriptorProto of
 * every message (for gRPC reflection, which meshgate does not serve), about
 * 20 ms and a second module graph at every sidecar start, where this is the
 * loader's own serializers (fromObject/encode, decode/toObject) and nothing else.
 */
export function loadGrpcApi(protoFile: string, pkg: string, name: string): GrpcApi {
  const root = new protobuf.Root().loadSync(protoFile, { keepCase: false });
  root.resolveAll();
  const found = root.lookup(`${pkg}.${name}`);
  if (!(found instanceof protobuf.Service)) throw new Error(`${protoFile} defines no service ${pkg}.${name}`);
  const service: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const method of found.methodsArray) {
    const request = method.resolvedRequestType!;
    const response = method.resolvedResponseType!;
    service[method.name] = {
      path: `/${pkg}.${name}/${method.name}`,
      requestStream: method.requestStream === true,
      responseStream: method.responseStream === true,
      requestSerialize: serializer(request),
      requestDeserialize: deserializer(request),
      responseSerialize: serializer(response),
      responseDeserialize: deserializer(response),
      // grpc-js names the client method and finds the server handler by this too: `Sign` is `sign`.
      originalName: method.name.charAt(0).toLowerCase() + method.name.slice(1),
    };
  }
  const Client = grpc.makeGenericClientConstructor(service, name);
  return { service, Client };
}

function serializer(type: protobuf.Type): (value: object) => Buffer {
  return (value) => {
    if (Array.isArray(value)) throw new Error(`Failed to serialize message: expected object with ${type.name} structure, got array instead`);
    return type.encode(type.fromObject(value)).finish() as Buffer;
  };
}

function deserializer(type: protobuf.Type): (bytes: Buffer) => object {
  return (bytes) => type.toObject(type.decode(bytes), TO_OBJECT);
}
