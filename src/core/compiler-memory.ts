import { setFlagsFromString } from 'node:v8';

/*
 * V8's Maglev compiler hands each finished compile job to a later background
 * task to be destroyed, and the job's zone (the compile's working memory, a
 * large part of what a sidecar's peak RSS under load holds above Node's own
 * floor) stays allocated until that task runs. With
 * --no-maglev-destroy-on-background the main thread frees it when it installs
 * the code. Set here, once started, against the same code without it (4
 * alternating rounds each): a one-hop sidecar's VmHWM after 15 s at 5 000
 * req/s 90.6-92.0 -> 84.7-85.4 MiB, the mesh row's sidecars after 10 s of
 * wrk -c50 108.3-117.6 -> 101.4-105.8, idle (both) and CPU to ready (one hop)
 * unchanged; CPU per request the same within noise (paired 1.021, 0.976,
 * 0.931 with the flag set at process start; bench/README.md, "What malloc
 * keeps after load").
 *
 * Why only once start-up is over: any V8 flag set differently from Node's build
 * changes the flag hash that code caches are checked against, so every one of
 * Node's built-in modules loaded after it compiles from source instead of from
 * the code cache in the node binary (10 built-ins: ~29 -> ~55 ms of CPU and
 * +0.7 MiB of the process's own memory). Set after the sidecar's modules are
 * loaded, the start-up keeps the cache; what loads later (HTTP/2 on a first
 * HTTP/2 caller, say) pays that once. NODE_OPTIONS takes no such flag anyway.
 */
export function freeCompileMemoryPromptly(): void {
  try {
    setFlagsFromString('--no-maglev-destroy-on-background');
  } catch {
    // A V8 that refuses it keeps its default: more memory at peak, nothing else.
  }
}
