import { copyFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { build, type Plugin, RolldownMagicString } from 'rolldown';

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

/*
 * The OTLP HTTP exporter (@opentelemetry/otlp-exporter-base) takes node:http
 * and node:https with `import("http")` on its first export. An ES import of
 * node:http makes Node build the module's namespace, whose WebSocket,
 * CloseEvent and MessageEvent getters load Node's own copy of undici: in a
 * mesh sidecar with tracing on, a ~50 ms stall of the event loop at its first
 * export, in the middle of traffic, and ~2 MiB (bench/README.md, "Cost per
 * pod"; src/core/node-builtins.ts avoids the same for meshgate's own imports). The bundle hands the exporter the CommonJS module,
 * as process.getBuiltinModule does, which it only destructures. The build
 * fails if the exporter no longer imports them this way, so an upgrade is
 * looked at rather than silently slower.
 */
const OTLP_HTTP_FILES = /@opentelemetry[\\/]otlp-exporter-base[\\/].*[\\/](http-exporter-transport|otlp-node-http-configuration)\.mjs$/;

function otlpHttpWithoutNamespaces(): Plugin {
  const rewritten = new Set<string>();
  return {
    name: 'meshgate:otlp-http-without-namespaces',
    transform(code, id) {
      if (!OTLP_HTTP_FILES.test(id)) return null;
      // Through a MagicString, so the bundle's source map still points into the exporter's file.
      const edited = new RolldownMagicString(code);
      for (const found of code.matchAll(/import\("(https?)"\)/g)) {
        edited.overwrite(found.index, found.index + found[0].length, `Promise.resolve(process.getBuiltinModule("node:${found[1]}"))`);
      }
      if (!edited.hasChanged()) this.error(`${id}: no import("http") to rewrite (scripts/build.ts, otlpHttpWithoutNamespaces)`);
      rewritten.add(path.basename(id));
      return { code: edited };
    },
    buildEnd() {
      if (rewritten.size !== 2) this.error(`the OTLP exporter's http imports were not all rewritten (${[...rewritten].join(', ') || 'none'}): see scripts/build.ts`);
    },
  };
}

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
  plugins: [otlpHttpWithoutNamespaces()],
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
// Loaded by src/policy/json-schema.ts with a require beside its own module, which is a chunk here.
await copyFile(path.join(ROOT, 'src/policy/json-schema-meta.cjs'), path.join(OUT, 'json-schema-meta.cjs'));
process.stdout.write(`meshgate bundled into ${path.relative(ROOT, OUT)}/ in ${Math.round(performance.now() - started)} ms\n`);
