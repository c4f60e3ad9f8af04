#!/usr/bin/env node
// Plain JavaScript on purpose: this check must run on any Node before TypeScript sources load.
const REQUIRED_MAJOR = 24;
const major = Number(process.versions.node.split('.')[0]);
if (major < REQUIRED_MAJOR) {
  process.stderr.write(`meshgate: Node.js ${REQUIRED_MAJOR} or newer is required (this is ${process.version}); run it through npm scripts or install Node ${REQUIRED_MAJOR} LTS\n`);
  process.exit(1);
}
// Caches compiled code between runs (Node 22.1+): start-up matters for CLI commands and restarts.
// process.getBuiltinModule, not import(): an import builds each module's ESM namespace, and node:fs's
// reads its `promises` getter, which loads fs/promises with readline and the REPL history (+1.1 MiB RSS in a bare process serving HTTP).
const { enableCompileCache } = process.getBuiltinModule('node:module');
enableCompileCache?.();
// The bundle (`npm run build`, dist/meshgate/) where there are no sources beside it, as in the container
// image, or when MESHGATE_BUNDLE=1 asks for it; the TypeScript sources otherwise, so a checkout never runs
// a stale bundle.
const { existsSync } = process.getBuiltinModule('node:fs');
const bundled = !existsSync(new URL('../src/cli/main.ts', import.meta.url)) || process.env.MESHGATE_BUNDLE === '1';
const { main } = await import(bundled ? '../dist/meshgate/main.js' : '../src/cli/main.ts');
const code = await main(process.argv.slice(2));
process.exitCode = code;
if (code !== 0) {
  // A role that failed part-way through starting may still hold a listener: it must not keep a
  // failed process alive. Exit once what was written to stdout and stderr has left.
  await Promise.all([process.stdout, process.stderr].map((stream) => new Promise((resolve) => stream.write('', resolve))));
  process.exit(code);
}
