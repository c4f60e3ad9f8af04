import { rm } from 'node:fs/promises';
import path from 'node:path';
import { build } from 'rolldown';

/*
 * `npm run build`: meshgate as one minified ES module graph in dist/meshgate/,
 * what the container image runs (bin/meshgate.js runs the sources, with Node's
 * type stripping, everywhere else).
 *
 * Why bundle: a sidecar runs next to every pod, so its memory and start-up
 * are multiplied by the fleet. The same sidecar resolves and compiles ~800
 * module files from src/ and node_modules/; bundled and minified it reads a
 * handful, and V8 keeps ~5 MB less source text (bench/README.md, "Cost per
 * pod", has the figures). What a config does not use stays in chunks that
 * load on demand (the dynamic imports in src/ become split points).
 *
 * The output sits two folders below the package root, like src/<concern>/, so
 * the `new URL('../../proto/...', import.meta.url)` of the gRPC API loaders
 * finds proto/ from either place. koffi loads a native binary by path and
 * stays in node_modules; so do the QuickJS packages, whose WebAssembly file
 * is read from beside their own modules (the sandbox of Filter documents),
 * and ajv with ajv-formats, which src/policy/json-schema.ts requires on the
 * first JSON Schema it compiles (synchronously, so it cannot be a split point).
 */

const ROOT = path.resolve(import.meta.dirname, '..');
const OUT = path.join(ROOT, 'dist', 'meshgate');

await rm(OUT, { recursive: true, force: true });
const started = performance.now();
await build({
  input: {
    main: path.join(ROOT, 'src/cli/main.ts'),
    // A worker thread's entry: parse-in-worker.ts names it beside its own file.
    'parse-worker': path.join(ROOT, 'src/policy/parse-worker.ts'),
  },
  platform: 'node',
  external: ['koffi', 'quickjs-emscripten-core', '@jitl/quickjs-wasmfile-release-sync'],
  logLevel: 'warn',
  output: {
    dir: OUT,
    format: 'esm',
    minify: true,
    // V8 keeps each module's source text (lazy compilation, Function.prototype.toString) and stores
    // a text with one character above U+00FF as two bytes per character: two emoji in undici's chunk
    // doubled its 725 KB. Escaped to ASCII, every chunk's source is held at one byte per character.
    charset: 'ascii',
    sourcemap: true,
    entryFileNames: '[name].js',
    chunkFileNames: '[name]-[hash].js',
  },
});
process.stdout.write(`meshgate bundled into ${path.relative(ROOT, OUT)}/ in ${Math.round(performance.now() - started)} ms\n`);
