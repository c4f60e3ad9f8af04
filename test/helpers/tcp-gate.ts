import type { AddressInfo } from 'node:net';
import net from 'node:net';

export interface TcpGate {
  /** host:port to dial instead of the target. */
  readonly address: string;
  /** While false, a connection is accepted and closed at once (the target looks down). */
  open: boolean;
  /** Connections accepted so far, shut or not: a caller's dial attempts, counted. */
  connections(): number;
  close(): Promise<void>;
}

/** A TCP forwarder on loopback to 127.0.0.1:`port` that the test can shut, and that counts the dials. */
export async function startTcpGate(port: number): Promise<TcpGate> {
  let open = true;
  let connections = 0;
  const pairs = new Set<net.Socket>();
  const server = net.createServer((client) => {
    connections++;
    if (!open) return void client.destroy();
    const upstream = net.connect(port, '127.0.0.1');
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      pairs.add(s);
      s.on('error', end);
      s.on('close', () => {
        pairs.delete(s);
        end();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    get open() {
      return open;
    },
    set open(value: boolean) {
      open = value;
    },
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of pairs) s.destroy();
        server.close(() => resolve());
      }),
  };
}
