/*
 * node:http, node:fs and node:util without their ES module namespaces, for
 * the modules every sidecar loads. An ES import makes Node build a namespace
 * of every export, reading each lazy getter: node:http's WebSocket,
 * CloseEvent and MessageEvent load Node's internal copy of undici (about
 * 13 MB of RSS and 100 ms of start-up when measured), node:fs's `promises`
 * loads fs/promises with Node's readline and REPL history code, node:util's
 * its diff, colour and worker modules (+1.1 and +1.3 MiB in a bare process
 * serving HTTP; ~0.4 MiB together in a plaintext sidecar, which loads some
 * of them anyway). getBuiltinModule hands over the CommonJS object as it is.
 * Type-only imports are erased and cost nothing; modules that only some
 * roles or commands load import as usual.
 */
export const nodeHttp: typeof import('node:http') = process.getBuiltinModule('node:http');
export const nodeFs: typeof import('node:fs') = process.getBuiltinModule('node:fs');
export const nodeUtil: typeof import('node:util') = process.getBuiltinModule('node:util');
