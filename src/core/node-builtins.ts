/*
 * node:fs and node:util without their ES module namespaces, for the modules
 * every sidecar loads (as src/core/node-http.ts does for node:http). An ES
 * import makes Node build a namespace of every export, reading each lazy
 * getter: node:fs's `promises` loads fs/promises with Node's readline and
 * REPL history code, node:util's load its diff, colour and worker modules.
 * About 1 MiB of RSS in every process for code a sidecar never runs.
 * Modules that only some roles or commands load import as usual.
 */
export const nodeFs: typeof import('node:fs') = process.getBuiltinModule('node:fs');
export const nodeUtil: typeof import('node:util') = process.getBuiltinModule('node:util');
