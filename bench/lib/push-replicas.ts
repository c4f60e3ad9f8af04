import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';

/*
 * bench:push --replicas N: a throw-away redis-server (loopback, no
 * persistence) for `store: redis`, and `meshgate policy-server` children
 * that report their ports in their "listening" log line.
 */

export interface SpawnedServer {
  readonly child: ChildProcess;
  readonly grpcPort: number;
  readonly adminPort: number;
  /** The inspector's WebSocket URL when started with --inspect. */
  readonly inspectorUrl: Promise<string>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Starts redis-server on a free loopback port; resolves with the child and its URL once it accepts connections. */
export async function startPushRedis(): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.once('error', (err) => reject(new Error(`redis-server: ${err.message} (apt-get install -y redis-server)`)));
    child.once('exit', (code) => reject(new Error(`redis-server exited ${code}: ${out.slice(-200)}`)));
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('Ready to accept connections')) resolve();
    });
  });
  child.stdout!.resume();
  child.stderr!.resume();
  return { child, url: `redis://127.0.0.1:${port}` };
}

/** `meshgate policy-server --config FILE` as a child; `inspect` adds --inspect on a free port. */
export async function spawnPolicyServer(bin: string, configFile: string, opts: { inspect: boolean }): Promise<SpawnedServer> {
  const child = spawn(process.execPath, [...(opts.inspect ? ['--inspect=127.0.0.1:0'] : []), bin, 'policy-server', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const inspectorUrl = new Promise<string>((resolve) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const url = /Debugger listening on (ws:\/\/\S+)/.exec(stderr)?.[1];
      if (url) resolve(url);
    });
  });
  const ports = await new Promise<{ grpcPort: number; adminPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`policy-server did not start within 20 s: ${stderr.split('\n')[0]}`)), 20_000);
    child.once('exit', (code) => reject(new Error(`policy-server exited ${code}: ${stderr.split('\n')[0]}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as { msg?: string; grpcPort?: number; adminPort?: number };
        if (entry.msg === 'meshgate policy-server listening') {
          clearTimeout(timer);
          resolve({ grpcPort: entry.grpcPort!, adminPort: entry.adminPort! });
        }
      } catch {
        // Not a log line.
      }
    });
  });
  return { child, ...ports, inspectorUrl };
}

/** SIGTERM, then SIGKILL after 5 s. */
export async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const force = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(force);
}
