import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRequestIds, kernelRandomFill } from '../../../src/proxy/request-ids.ts';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('request ids', () => {
  it('are distinct random UUIDs (version 4, RFC 9562 variant) from the kernel', () => {
    const next = createRequestIds();
    const ids = Array.from({ length: 2000 }, () => next());
    for (const id of ids) expect(id).toMatch(UUID_V4);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('lay the random bytes out in order, with the version and variant bits set', () => {
    const bytes = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    expect(createRequestIds((pool) => pool.fill(bytes))()).toBe('00112233-4455-4677-8899-aabbccddeeff');
    expect(createRequestIds((pool) => pool.fill(0))()).toBe('00000000-0000-4000-8000-000000000000');
    expect(createRequestIds((pool) => pool.fill(0xff))()).toBe('ffffffff-ffff-4fff-bfff-ffffffffffff');
  });

  it('refill their pool once per 256 ids, never reusing bytes', () => {
    let fills = 0;
    const next = createRequestIds((pool) => {
      fills++;
      for (let i = 0; i < pool.length; i++) pool[i] = (i + fills * 7) & 0xff;
    });
    const ids = Array.from({ length: 513 }, () => next());
    expect(fills).toBe(3);
    expect(ids[256]).not.toBe(ids[0]);
  });
});

describe('the kernel random source', () => {
  it('reads the device it is given', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'meshgate-random-'));
    try {
      const device = path.join(dir, 'bytes');
      writeFileSync(device, Buffer.alloc(8192, 0x5a));
      const pool = Buffer.alloc(4096);
      kernelRandomFill(device)(pool);
      expect(pool.every((byte) => byte === 0x5a)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('falls back to node:crypto where the device cannot be read, or ends early', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'meshgate-random-'));
    try {
      const short = path.join(dir, 'short');
      writeFileSync(short, Buffer.alloc(10, 0));
      for (const device of [path.join(dir, 'missing'), short]) {
        const pool = Buffer.alloc(4096);
        kernelRandomFill(device)(pool);
        expect(new Set(pool).size).toBeGreaterThan(200); // random bytes, not zeros left as they were
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
