import { nodeFs, nodeUtil } from '../core/node-builtins.ts';

const { close, constants, fstat, open, read } = nodeFs;
// node:fs's callbacks, not node:fs/promises, which loads Node's readline and REPL history code with it
// (src/core/node-builtins.ts): a sidecar reads its config file with this and needs nothing else of that module.
const openFile = nodeUtil.promisify(open);
const statOf = nodeUtil.promisify(fstat);
const readInto = nodeUtil.promisify(read);
const closeFile = nodeUtil.promisify(close);

/*
 * Reading a file the user named (a config file, a policy file) without
 * trusting it to be one: a FIFO would block the read forever, /dev/zero
 * never ends, a huge file exhausts memory before any limit is looked at,
 * and Latin-1 bytes decoded as UTF-8 turn into U+FFFD silently. Each of
 * these is one short reason instead.
 */

export type TextFileResult = { readonly ok: true; readonly text: string } | { readonly ok: false; readonly reason: string };

/**
 * The UTF-8 text of the regular file `file`, of at most `maxBytes` bytes.
 * Opened non-blocking, so a FIFO is refused at once instead of waiting for
 * a writer; read up to the limit only, so a file that grows meanwhile (or a
 * device) cannot make it read more.
 */
export async function readTextFile(file: string, maxBytes: number): Promise<TextFileResult> {
  let fd: number;
  try {
    fd = await openFile(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    return { ok: false, reason: cannotRead(err) };
  }
  try {
    const st = await statOf(fd);
    if (st.isDirectory()) return { ok: false, reason: 'is a folder, expected a file' };
    if (!st.isFile()) return { ok: false, reason: `not a regular file (${fileKind(st)})` };
    if (st.size > maxBytes) return { ok: false, reason: tooLarge(maxBytes, st.size) };
    // One byte more than allowed tells a file that grew past the limit since the stat.
    const buffer = Buffer.allocUnsafe(Math.min(st.size, maxBytes) + 1);
    let length = 0;
    while (length < buffer.length) {
      const { bytesRead } = await readInto(fd, buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > maxBytes) return { ok: false, reason: tooLarge(maxBytes) };
    return decodeUtf8(buffer.subarray(0, length));
  } catch (err) {
    return { ok: false, reason: cannotRead(err) };
  } finally {
    await closeFile(fd).catch(() => undefined);
  }
}

function tooLarge(maxBytes: number, size?: number): string {
  return `file too large: at most ${maxBytes} bytes${size === undefined ? '' : ` (got ${size})`}`;
}

function cannotRead(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return `cannot read file (${code === 'ENOENT' ? 'no such file' : (code ?? String(err))})`;
}

function fileKind(st: { isFIFO(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isSocket(): boolean }): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a file';
}

/** Strict UTF-8 (a leading BOM is dropped); the reason names the line and column of the first bad byte. */
function decodeUtf8(bytes: Uint8Array): TextFileResult {
  try {
    return { ok: true, text: new TextDecoder('utf-8', { fatal: true }).decode(bytes) };
  } catch {
    const at = firstInvalidUtf8(bytes);
    const { line, column } = lineAndColumn(bytes, at);
    return { ok: false, reason: `not UTF-8 text: byte 0x${bytes[at]!.toString(16).toUpperCase().padStart(2, '0')} at line ${line}, column ${column} (save the file as UTF-8)` };
  }
}

/** Offset of the first byte that does not decode (the lead byte of a broken sequence); only called on invalid text. */
function firstInvalidUtf8(bytes: Uint8Array): number {
  // Find the failing 4 KiB chunk with a streaming decoder, then the byte within it.
  const CHUNK = 4096;
  const chunks = new TextDecoder('utf-8', { fatal: true });
  let start = 0;
  for (; start < bytes.length; start += CHUNK) {
    try {
      chunks.decode(bytes.subarray(start, start + CHUNK), { stream: true });
    } catch {
      break;
    }
  }
  // Back to a character boundary: everything before it decoded, so a fresh decoder starts clean there.
  let from = Math.min(start, bytes.length - 1);
  while (from > 0 && (bytes[from]! & 0xc0) === 0x80) from--;
  const byByte = new TextDecoder('utf-8', { fatal: true });
  let pending = -1;
  for (let i = from; i < bytes.length; i++) {
    try {
      const out = byByte.decode(bytes.subarray(i, i + 1), { stream: true });
      if (out !== '') pending = -1;
      else if (pending < 0) pending = i;
    } catch {
      return pending >= 0 ? pending : i;
    }
  }
  return pending >= 0 ? pending : bytes.length - 1;
}

function lineAndColumn(bytes: Uint8Array, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset; i++) {
    if (bytes[i] === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  // Columns count characters, as an editor shows them: continuation bytes do not add one.
  let column = 1;
  for (let i = lineStart; i < offset; i++) if ((bytes[i]! & 0xc0) !== 0x80) column++;
  return { line, column };
}
