import type { ReceivedFrame } from './h2-frames.ts';
import { CLIENT_PREFACE, Flag, FrameType, frame, headerBlock, parseFrames } from './h2-frames.ts';
import type { RawConnection } from './raw-socket.ts';
import { connectRaw } from './raw-socket.ts';

/* Raw HTTP/2 (h2c, prior knowledge) connections for the HTTP/2 attack cases (h2-headers, h2-floods). */

export type Field = readonly [string, string];

/** A well-formed GET's header block fields, for `authority`. */
export function requestFields(authority: string, path = '/'): Field[] {
  return [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', path],
    [':authority', authority],
  ];
}

/** One complete request (HEADERS with END_HEADERS and END_STREAM) on `streamId`. */
export function requestFrame(streamId: number, fields: ReadonlyArray<Field>): Buffer {
  return frame(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, streamId, headerBlock(fields));
}

export interface H2Raw extends RawConnection {
  frames(): ReceivedFrame[];
  /** Resolves once a frame matching `test` arrived; rejects when the connection closes first. */
  waitForFrame(test: (f: ReceivedFrame) => boolean): Promise<ReceivedFrame>;
  /** Resolves with `streamId`'s response body once its END_STREAM arrived. */
  body(streamId: number): Promise<string>;
}

/** Connects, sends the client preface and `settings` (a SETTINGS payload, empty by default). */
export async function connectH2(port: number, settings: Buffer = Buffer.alloc(0)): Promise<H2Raw> {
  const conn = await connectRaw(port);
  conn.write(Buffer.concat([CLIENT_PREFACE, frame(FrameType.SETTINGS, 0, 0, settings)]));
  const frames = (): ReceivedFrame[] => parseFrames(Buffer.from(conn.text(), 'latin1'));
  const waitForFrame = async (test: (f: ReceivedFrame) => boolean): Promise<ReceivedFrame> => {
    for (;;) {
      const found = frames().find(test);
      if (found) return found;
      if (conn.socket.destroyed) throw new Error(`connection closed; frames: ${JSON.stringify(frames().map((f) => [f.type, f.streamId]))}`);
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          conn.socket.off('data', wake);
          conn.socket.off('close', wake);
          resolve();
        };
        conn.socket.on('data', wake);
        conn.socket.on('close', wake);
      });
    }
  };
  return Object.assign(conn, {
    frames,
    waitForFrame,
    async body(streamId: number) {
      await waitForFrame((f) => f.streamId === streamId && (f.type === FrameType.DATA || f.type === FrameType.HEADERS) && (f.flags & Flag.END_STREAM) !== 0);
      return Buffer.concat(
        frames()
          .filter((f) => f.type === FrameType.DATA && f.streamId === streamId)
          .map((f) => f.payload),
      ).toString('utf8');
    },
  });
}

/** True while the server has not closed the connection (no GOAWAY, socket open). */
export function stillOpen(conn: H2Raw): boolean {
  return !conn.socket.destroyed && !conn.frames().some((f) => f.type === FrameType.GOAWAY);
}
