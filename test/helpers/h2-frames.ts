/*
 * A tiny HTTP/2 frame encoder and decoder (RFC 9113 §4.1, HPACK RFC 7541) for fuzzing and attacks:
 * it writes whatever it is told, valid or not (lengths, flags, stream ids),
 * so a test can send frames no conforming client would.
 */

export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

export const CLIENT_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

/** One frame: a 9-byte header, then the payload. `length` overrides the declared length (a lie, on purpose). */
export function frame(type: number, flags: number, streamId: number, payload: Buffer, length = payload.length): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(length & 0xffffff, 0, 3);
  head[3] = type & 0xff;
  head[4] = flags & 0xff;
  head.writeUInt32BE(streamId >>> 0, 5);
  return Buffer.concat([head, payload]);
}

/** HPACK integer with an N-bit prefix (RFC 7541 §5.1); `high` is OR'ed into the first byte. */
export function hpackInt(value: number, prefixBits: number, high = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([high | value]);
  const bytes = [high | max];
  let rest = value - max;
  while (rest >= 128) {
    bytes.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

function hpackString(text: string): Buffer {
  const bytes = Buffer.from(text, 'latin1');
  return Buffer.concat([hpackInt(bytes.length, 7), bytes]);
}

/** Literal header field without indexing, new name (RFC 7541 §6.2.2): no dynamic table, no Huffman. */
function hpackLiteral(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);
}

export function headerBlock(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  return Buffer.concat(fields.map(([name, value]) => hpackLiteral(name, value)));
}

/** SETTINGS payload: 16-bit id, 32-bit value per entry. */
export function settingsPayload(entries: ReadonlyArray<readonly [number, number]>): Buffer {
  const out = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], i) => {
    out.writeUInt16BE(id & 0xffff, i * 6);
    out.writeUInt32BE(value >>> 0, i * 6 + 2);
  });
  return out;
}

export function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value >>> 0);
  return out;
}

export interface ReceivedFrame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
}

/** Splits received bytes into whole frames (a trailing partial frame is left out). */
export function parseFrames(bytes: Buffer): ReceivedFrame[] {
  const frames: ReceivedFrame[] = [];
  let at = 0;
  while (at + 9 <= bytes.length) {
    const length = bytes.readUIntBE(at, 3);
    if (at + 9 + length > bytes.length) break;
    frames.push({ type: bytes[at + 3]!, flags: bytes[at + 4]!, streamId: bytes.readUInt32BE(at + 5) & 0x7fffffff, payload: bytes.subarray(at + 9, at + 9 + length) });
    at += 9 + length;
  }
  return frames;
}

/** The error code of the first GOAWAY among `frames`, if any. */
export function goawayCode(frames: ReadonlyArray<ReceivedFrame>): number | undefined {
  const goaway = frames.find((f) => f.type === FrameType.GOAWAY);
  return goaway?.payload.readUInt32BE(4);
}

/** The error code of the RST_STREAM on `streamId`, if any. */
export function rstCode(frames: ReadonlyArray<ReceivedFrame>, streamId: number): number | undefined {
  return frames.find((f) => f.type === FrameType.RST_STREAM && f.streamId === streamId)?.payload.readUInt32BE(0);
}

/** The :status of the response HEADERS on `streamId`, when sent as a static-table index or a literal (as node does for small responses). */
function hasResponse(frames: ReadonlyArray<ReceivedFrame>, streamId: number): boolean {
  return frames.some((f) => f.type === FrameType.HEADERS && f.streamId === streamId);
}
