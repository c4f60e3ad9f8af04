import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type SidecarProcess, startSidecarProcess } from './sidecar-process.ts';

const RECORDER = path.resolve(import.meta.dirname, '../fixtures/record-packages.mjs');

/**
 * Starts a sidecar on `config` with test/fixtures/record-packages.mjs loaded, runs `settled` with its
 * ports (the calls a case makes), stops it with SIGTERM (a drained exit runs the recorder's exit hook)
 * and returns what the recorder listed: packages, and Node's own modules it names.
 */
export async function packagesLoadedBy(
  config: Record<string, unknown>,
  options: { readonly settled?: (ports: SidecarProcess['ports']) => Promise<unknown>; readonly env?: NodeJS.ProcessEnv } = {},
): Promise<string[]> {
  const dir = mkdtempSync(path.join(tmpdir(), 'meshgate-load-record-'));
  let sidecar: SidecarProcess | undefined;
  try {
    const record = path.join(dir, 'loaded.txt');
    writeFileSync(record, '');
    sidecar = await startSidecarProcess(config, dir, 30_000, {
      nodeArgs: ['--import', RECORDER],
      env: { ...process.env, ...options.env, MESHGATE_LOAD_RECORD: record },
    });
    await options.settled?.(sidecar.ports);
    sidecar.child.kill('SIGTERM');
    await sidecar.exited;
    return readFileSync(record, 'utf8').split('\n').filter(Boolean);
  } finally {
    if (sidecar && sidecar.child.exitCode === null && sidecar.child.signalCode === null) sidecar.child.kill('SIGKILL'); // a case that failed part-way
    rmSync(dir, { recursive: true, force: true });
  }
}
