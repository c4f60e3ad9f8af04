/*
 * node:http without its ES module namespace. `import http from 'node:http'`
 * makes Node build a namespace of every export, and reading WebSocket,
 * CloseEvent and MessageEvent loads Node's internal copy of undici: about
 * 13 MB of RSS and 100 ms of start-up in every process, for classes meshgate
 * never uses. getBuiltinModule hands over the CommonJS object as it is.
 * (Type-only imports from 'node:http' are erased and cost nothing.)
 */
export const nodeHttp: typeof import('node:http') = process.getBuiltinModule('node:http');
