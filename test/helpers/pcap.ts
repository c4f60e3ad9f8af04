/*
 * The TCP payloads of a classic pcap file (what `tcpdump -w` writes) with an
 * Ethernet link layer and IPv4: enough to assert what crossed a veth.
 */

export interface TcpPayload {
  readonly src: string;
  readonly dst: string;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly data: Buffer;
}

export function tcpPayloads(file: Buffer): TcpPayload[] {
  const magic = file.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && file.readUInt32BE(0) !== 0xa1b2c3d4 && file.readUInt32BE(0) !== 0xa1b23c4d) throw new Error('not a pcap file');
  const u32 = (offset: number): number => (le ? file.readUInt32LE(offset) : file.readUInt32BE(offset));
  if (u32(20) !== 1) throw new Error(`link type ${u32(20)} is not Ethernet`);
  const out: TcpPayload[] = [];
  for (let at = 24; at + 16 <= file.length; ) {
    const captured = u32(at + 8);
    const frame = file.subarray(at + 16, at + 16 + captured);
    at += 16 + captured;
    if (frame.length < 14 + 20 || frame.readUInt16BE(12) !== 0x0800) continue;
    const ip = frame.subarray(14);
    const ihl = (ip[0]! & 0x0f) * 4;
    if (ip[9] !== 6) continue;
    const total = ip.readUInt16BE(2);
    const tcp = ip.subarray(ihl, total);
    const dataOffset = (tcp[12]! >> 4) * 4;
    const data = tcp.subarray(dataOffset);
    if (data.length === 0) continue;
    out.push({
      src: `${ip[12]}.${ip[13]}.${ip[14]}.${ip[15]}`,
      dst: `${ip[16]}.${ip[17]}.${ip[18]}.${ip[19]}`,
      srcPort: tcp.readUInt16BE(0),
      dstPort: tcp.readUInt16BE(2),
      data,
    });
  }
  return out;
}
