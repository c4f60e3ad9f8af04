import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/*
 * BENCH_TLS_PROFILE=1: the sidecar runs with `node --cpu-prof`; this reads the
 * .cpuprofile it writes on exit and says where its JavaScript time went.
 * OpenSSL work started from JavaScript (the first handshake flight, fed in by
 * TLSSocket's initRead; getPeerCertificate) is charged to that JS frame.
 * Native work in I/O callbacks with no JavaScript on the stack (where Node
 * processes most TLS records and the client's second flight) can be counted
 * as idle by V8's profiler, and idle is left out: for the whole split,
 * including OpenSSL and the kernel, use BENCH_TLS_PERF (lib/tls-perf.ts).
 * Only samples taken during the measured runs count (start-up, module
 * loading and warm-up are left out); V8 and process.hrtime read the same
 * monotonic clock.
 */

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  /** Microseconds on the monotonic clock, the one process.hrtime reads. */
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

interface ProfileShare {
  readonly name: string;
  readonly ms: number;
  /** Of busy (non-idle) time. */
  readonly share: number;
}

/** A measured run: [start, end] in microseconds of process.hrtime.bigint() / 1000. */
export interface ProfileWindow {
  readonly startUs: number;
  readonly endUs: number;
}

export interface ProfileSummary {
  readonly file: string;
  /** Samples counted: those inside a measured run (none when no window matched: then all). */
  readonly scope: 'measured runs' | 'whole process';
  readonly busyMs: number;
  /** By the innermost frame of a sample's stack that says what it was doing (see phaseOf). */
  readonly phases: readonly ProfileShare[];
  /** By where the sampled frame itself lives. */
  readonly groups: readonly ProfileShare[];
  readonly topFunctions: readonly ProfileShare[];
}

function groupOf(url: string, functionName: string, repoRoot: string): string {
  if (url === '') {
    if (functionName === '(program)') return 'native: OpenSSL handshakes and records, libuv, Node C++ (program)';
    if (functionName === '(garbage collector)') return 'garbage collector';
    return `native/builtin ${functionName}`;
  }
  if (url.startsWith('node:internal/tls') || url === 'node:tls' || url.startsWith('node:_tls')) return 'JS: node:tls';
  if (url.startsWith('node:_http') || url.startsWith('node:http') || url.startsWith('node:internal/http')) return 'JS: node:http';
  if (url.startsWith('node:internal/streams') || url.startsWith('node:stream')) return 'JS: node streams';
  if (url.startsWith('node:net') || url.startsWith('node:internal/net') || url.startsWith('node:internal/stream_base')) return 'JS: node:net';
  if (url.startsWith('node:')) return `JS: ${url}`;
  const path = url.replace(/^file:\/\//, '');
  const inModules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
  if (inModules) return `JS: ${inModules[1]}`;
  if (path.startsWith(repoRoot)) return `JS: meshgate ${path.slice(repoRoot.length).replace(/^\//, '').split('/').slice(0, 2).join('/')}`;
  return 'JS: other';
}

const TLS_FRAMES = new Set([
  'initRead',
  'onhandshakedone',
  'onServerSocketSecure',
  'TLSSocket._finishInit',
  'TLSSocket._wrapHandle',
  'TLSSocket._init',
  'TLSSocket',
  'tlsConnectionListener',
  'TLSSocket.getPeerCertificate',
  'onnewsession',
  'onnewsessionclient',
  'loadSession',
]);

/**
 * What a sample was doing, from the innermost frame of its stack that tells:
 * the handshake (OpenSSL runs inside initRead when the ClientHello is already
 * buffered, and inside the socket's read callbacks otherwise), the HTTP
 * server, the upstream client, socket reads and writes (which include TLS
 * record encryption), or meshgate's own code.
 */
function phaseOf(frame: ProfileNode['callFrame'], repoRoot: string): string | undefined {
  const { url, functionName } = frame;
  if (functionName === '(garbage collector)') return 'garbage collector';
  if (functionName === '(program)') return 'native, outside any JS call (OpenSSL on socket reads, libuv)';
  if (url.includes('node_modules/undici')) return 'upstream request to the app (undici)';
  if (TLS_FRAMES.has(functionName) || url.includes('/src/identity/mesh-tls')) return 'TLS handshake, peer certificate, TLS socket set-up';
  if (url.startsWith('node:_http') || url.startsWith('node:internal/http')) return 'HTTP/1.1 server (parse request, write response)';
  if (url.startsWith('node:net') || url.startsWith('node:internal/stream_base') || functionName === 'shutdown' || functionName === 'writev')
    return 'socket I/O: accept, read, write (+ TLS records), close';
  if (url.replace(/^file:\/\//, '').startsWith(repoRoot)) return 'meshgate code (src/)';
  return undefined;
}

/** Summarises the newest .cpuprofile in `dir`, or undefined when there is none. */
export function summariseProfile(dir: string, repoRoot: string, windows: readonly ProfileWindow[]): ProfileSummary | undefined {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .sort();
  const file = files.at(-1);
  if (file === undefined) return undefined;
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);
  const phaseOfNode = (id: number): string => {
    for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
      const phase = phaseOf(byId.get(at)!.callFrame, repoRoot);
      if (phase !== undefined) return phase;
    }
    return 'other (event loop, timers, promises, streams)';
  };
  const tally = (inWindow: boolean): Map<number, number> => {
    const selfUs = new Map<number, number>();
    let at = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      // timeDeltas[i] is the time before sample i; attribute the next delta to this sample.
      at += profile.timeDeltas[i] ?? 0;
      if (inWindow && !windows.some((w) => at >= w.startUs && at <= w.endUs)) continue;
      const us = profile.timeDeltas[i + 1] ?? 0;
      selfUs.set(profile.samples[i]!, (selfUs.get(profile.samples[i]!) ?? 0) + us);
    }
    return selfUs;
  };
  let scope: ProfileSummary['scope'] = 'measured runs';
  let selfUs = tally(true);
  if (selfUs.size === 0) {
    scope = 'whole process';
    selfUs = tally(false);
  }
  const groups = new Map<string, number>();
  const phases = new Map<string, number>();
  const functions = new Map<string, number>();
  let busyUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') continue;
    busyUs += us;
    const group = groupOf(frame.url, frame.functionName, repoRoot);
    groups.set(group, (groups.get(group) ?? 0) + us);
    const phase = phaseOfNode(id);
    phases.set(phase, (phases.get(phase) ?? 0) + us);
    const where =
      frame.url === ''
        ? ''
        : ` ${frame.url
            .replace(/^file:\/\//, '')
            .replace(repoRoot, '')
            .replace(/^\//, '')}:${frame.lineNumber + 1}`;
    const name = `${frame.functionName || '(anonymous)'}${where}`;
    functions.set(name, (functions.get(name) ?? 0) + us);
  }
  const shares = (m: Map<string, number>, n: number): ProfileShare[] =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, us]) => ({ name, ms: Math.round(us / 1000), share: busyUs > 0 ? us / busyUs : 0 }));
  return { file: join(dir, file), scope, busyMs: Math.round(busyUs / 1000), phases: shares(phases, 12), groups: shares(groups, 12), topFunctions: shares(functions, 15) };
}

export function renderProfile(summary: ProfileSummary): string {
  const pct = (s: number): string => `${(s * 100).toFixed(1).padStart(5)}%`;
  return [
    `Where the sidecar's busy CPU time went (V8 sampling profile, ${summary.scope}, ${summary.busyMs.toLocaleString('en-US')} ms busy):`,
    ...summary.phases.map((g) => `  ${pct(g.share)}  ${g.name}`),
    'By where the sampled code lives (self time):',
    ...summary.groups.map((g) => `  ${pct(g.share)}  ${g.name}`),
    'Top functions by self time:',
    ...summary.topFunctions.map((f) => `  ${pct(f.share)}  ${f.name}`),
  ].join('\n');
}
