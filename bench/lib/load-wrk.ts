import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LoadGenerator, LoadRequest, LoadResult } from './load.ts';
import type { ProcessGroup } from './processes.ts';
import { describeExit, firstOutputLine, settlesWithin } from './processes.ts';

/*
 * wrk, one thread (the machine has few cores; the thread must not steal the
 * proxy's). `--latency` prints the percentile lines parsed here.
 */

export function createWrkGenerator(group: ProcessGroup, binary: string, version: string): LoadGenerator {
  // One Lua script per distinct method and body (bench:mesh sends a POST with a JSON body).
  const scripts = new Map<string, string>();
  const scriptFor = (method: string, body: string): string => {
    const key = `${method} ${body}`;
    let file = scripts.get(key);
    if (file === undefined) {
      file = join(group.tempDir('meshgate-bench-wrk-'), 'request.lua');
      writeFileSync(file, `wrk.method = ${luaString(method)}\nwrk.body = ${luaString(body)}\n`);
      scripts.set(key, file);
    }
    return file;
  };
  return {
    name: 'wrk',
    version,
    run: async (request: LoadRequest): Promise<LoadResult> => {
      const args = ['-t1', `-c${request.connections}`, `-d${request.durationS}s`, '--latency', '--timeout', '5s'];
      // wrk adds its own `Host` unless one is spelled exactly so (its Lua table is case-sensitive): two Hosts get a 400.
      for (const [name, value] of Object.entries(request.headers)) args.push('-H', `${name.toLowerCase() === 'host' ? 'Host' : name}: ${value}`);
      if (request.method !== undefined || request.body !== undefined) args.push('-s', scriptFor(request.method ?? 'GET', request.body ?? ''));
      args.push(request.url);
      const child = group.spawn({ name: 'wrk', command: binary, args });
      // wrk stops itself after the duration; the margin covers start-up and its 5s request timeout.
      const finished = await settlesWithin(child.exited, (request.durationS + 20) * 1000);
      if (!finished) {
        await child.stop(500);
        throw new Error(`wrk did not finish within ${request.durationS + 20}s`);
      }
      await child.stop(0);
      const exit = await child.exited;
      if (exit.code !== 0) throw new Error(`wrk ${describeExit(exit)}: ${firstOutputLine(child) ?? 'no output'}`);
      return parseWrkOutput(child.stdout());
    },
  };
}

/** A Lua string literal of any bytes: every byte as a decimal escape, so nothing in the text can end it. */
function luaString(text: string): string {
  return `"${[...Buffer.from(text, 'utf8')].map((b) => `\\${b}`).join('')}"`;
}

const TIME_UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses the text wrk prints with `--latency`; throws when a figure is missing. */
function parseWrkOutput(text: string): LoadResult {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(text);
  const requests = /^\s*(\d+) requests in /m.exec(text);
  const p50 = /^\s+50(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$/m.exec(text);
  const p99 = /^\s+99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$/m.exec(text);
  if (!rps || !requests || !p50 || !p99) {
    throw new Error(`unexpected wrk output:\n${text.slice(0, 2000)}`);
  }
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(text);
  return {
    rps: Number(rps[1]),
    p50Ms: Number(p50[1]) * TIME_UNIT_MS[p50[2]!]!,
    p99Ms: Number(p99[1]) * TIME_UNIT_MS[p99[2]!]!,
    requests: Number(requests[1]),
    errors: socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0,
    non2xx: non2xx ? Number(non2xx[1]) : 0,
  };
}
