import { nodeFs } from '../core/node-builtins.ts';

/** Random bytes read per refill: 256 request ids. */
const POOL_BYTES = 4096;
const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'));

/** Fills `pool` with random bytes from the kernel's CSPRNG. */
export type RandomFill = (pool: Buffer) => void;

/**
 * Request ids for calls that arrive without one: random UUIDs (RFC 9562
 * version 4), formatted from a pool of random bytes refilled 4 KiB at a time.
 *
 * Why not node:crypto's randomUUID, which does the same from OpenSSL's
 * generator: loading node:crypto costs every process ~0.8 MiB of RSS, and a
 * plaintext sidecar needs it for nothing else. The bytes come from the same
 * place OpenSSL seeds from, the kernel (/dev/urandom, which never blocks once
 * the system has booted); where that device cannot be read, from node:crypto.
 */
export function createRequestIds(fill: RandomFill = kernelRandomFill()): () => string {
  const pool = Buffer.allocUnsafe(POOL_BYTES);
  let offset = POOL_BYTES;
  return () => {
    if (offset === POOL_BYTES) {
      fill(pool);
      offset = 0;
    }
    const b = pool;
    const i = offset;
    offset += 16;
    return (
      HEX[b[i]!]! +
      HEX[b[i + 1]!] +
      HEX[b[i + 2]!] +
      HEX[b[i + 3]!] +
      '-' +
      HEX[b[i + 4]!] +
      HEX[b[i + 5]!] +
      '-' +
      HEX[(b[i + 6]! & 0x0f) | 0x40] + // version 4
      HEX[b[i + 7]!] +
      '-' +
      HEX[(b[i + 8]! & 0x3f) | 0x80] + // variant 10
      HEX[b[i + 9]!] +
      '-' +
      HEX[b[i + 10]!] +
      HEX[b[i + 11]!] +
      HEX[b[i + 12]!] +
      HEX[b[i + 13]!] +
      HEX[b[i + 14]!] +
      HEX[b[i + 15]!]
    );
  };
}

/** /dev/urandom, opened per refill (open, read, close: three system calls per 256 ids); node:crypto where it cannot be read. */
export function kernelRandomFill(device = '/dev/urandom'): RandomFill {
  return (pool) => {
    let fd: number | undefined;
    try {
      fd = nodeFs.openSync(device, 'r');
      let filled = 0;
      while (filled < pool.length) {
        const read = nodeFs.readSync(fd, pool, filled, pool.length - filled, null);
        if (read === 0) throw new Error(`${device} ended early`);
        filled += read;
      }
    } catch {
      process.getBuiltinModule('node:crypto').randomFillSync(pool);
    } finally {
      // A read-only descriptor that fails to close costs nothing worth failing a call for.
      if (fd !== undefined) closeQuietly(fd);
    }
  };
}

function closeQuietly(fd: number): void {
  try {
    nodeFs.closeSync(fd);
  } catch {
    // nothing to do: see above
  }
}
