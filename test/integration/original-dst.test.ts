import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOriginalDstReader, parseSockaddr } from '../../src/interception/original-dst.ts';
import { createNetns, deleteNetns, must, netnsUnavailable, runIn, sweepNetns, uniqueName } from '../helpers/netns.ts';

/*
 * The original destination of a redirected connection, read with libc's
 * getsockopt(SO_ORIGINAL_DST) through koffi: the real kernel answer inside a
 * network namespace with a REDIRECT rule, and "not intercepted" for a
 * connection that was not redirected.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PREFIX = 'mgodst-';
const skip = await netnsUnavailable(['iptables']);
if (skip) console.log(`original-dst.test.ts: the namespace case is skipped: ${skip}`);

describe('original destination', () => {
  it('is "not intercepted" for a connection nobody redirected (an app dialling the listener itself)', async () => {
    const reader = await loadOriginalDstReader();
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const socket = await accepted;
    expect(reader.read(socket)).toBeUndefined();
    client.destroy();
    socket.destroy();
    server.close();
  });

  it('decodes sockaddr_in and sockaddr_in6 as the kernel writes them', () => {
    const v4 = Buffer.alloc(16);
    v4.writeUInt16LE(2, 0);
    v4.writeUInt16BE(5432, 2);
    Buffer.from([10, 254, 0, 7]).copy(v4, 4);
    expect(parseSockaddr(v4)).toEqual({ address: '10.254.0.7', port: 5432 });
    const v6 = Buffer.alloc(28);
    v6.writeUInt16LE(10, 0);
    v6.writeUInt16BE(443, 2);
    Buffer.from('fd000000000000000000000000000001', 'hex').copy(v6, 8);
    expect(parseSockaddr(v6)).toEqual({ address: 'fd00::1', port: 443 });
  });

  describe.skipIf(skip !== undefined)('in a network namespace with a REDIRECT rule', () => {
    const ns = uniqueName(PREFIX);
    beforeAll(async () => {
      await sweepNetns(PREFIX, 10 * 60_000); // leftovers of a crashed run, never a run going on now
      await createNetns(ns);
      // A route for 10.254.200.0/24, so the connect gets as far as nat OUTPUT.
      await must('ip', ['-n', ns, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1']);
      await must('ip', ['-n', ns, 'addr', 'add', '10.254.200.1/24', 'dev', 'v0']);
      await must('ip', ['-n', ns, 'link', 'set', 'v0', 'up']);
      await must('ip', ['-n', ns, 'link', 'set', 'v1', 'up']);
      await must('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '10.254.200.9', '--dport', '5432', '-j', 'REDIRECT', '--to-ports', '15001']);
    });
    afterAll(() => deleteNetns(ns));

    it('reads where the redirected connection was going, and nothing for the direct one', async () => {
      const res = await runIn(ns, process.execPath, [`${ROOT}test/fixtures/original-dst-probe.ts`, '15001', '10.254.200.9', '5432']);
      expect(res.stderr).toBe('');
      expect(JSON.parse(res.stdout)).toEqual([{ address: '10.254.200.9', port: 5432 }, null]);
    });
  });
});
