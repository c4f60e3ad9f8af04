import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestCa } from '../helpers/ca-fixture.ts';
import { startTestCa } from '../helpers/ca-fixture.ts';

/** The serial of the certificate the CA serves on a fresh TLS connection. */
async function servedSerial(ca: TestCa): Promise<string> {
  const [host, port] = ca.address.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port: Number(port), ca: ca.rootsPem, servername: 'localhost', ALPNProtocols: ['h2'] }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.destroy();
      resolve(serial);
    });
    socket.once('error', reject);
  });
}

describe('CA serving certificate', () => {
  let ca: TestCa;
  let realTime: NodeJS.Timeout;
  beforeAll(async () => {
    // A 2 s serving lifetime: renewed at half-life, about every second.
    ca = await startTestCa({ overrides: { leaf: { ttl: '2s', maxTtl: '2s' } } });
    // The fixture's clock stands still; here it keeps real time, as the TLS clients checking the certificate do.
    realTime = setInterval(() => ca.clock.advance(Date.now() - ca.clock.now()), 20);
  });
  afterAll(async () => {
    clearInterval(realTime);
    await ca?.close();
  });

  it('is renewed at half-life again and again, each renewal served to new connections', async () => {
    const first = await servedSerial(ca);
    const renewed = () => ca.logs.filter((l) => l.msg === 'serving certificate renewed');
    await expect.poll(() => renewed().length, { timeout: 5_000, interval: 50 }).toBeGreaterThanOrEqual(2);
    const latest = String(renewed().at(-1)!.serial);
    await expect.poll(() => servedSerial(ca), { timeout: 3_000 }).not.toBe(first);
    expect([latest, String(renewed().at(-2)!.serial)]).toContain((await servedSerial(ca)).toUpperCase());
    expect(ca.logs.filter((l) => String(l.msg).startsWith('serving certificate renewal failed'))).toEqual([]);
  });
});
