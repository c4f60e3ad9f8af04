import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { sidecarConfigSchema } from '../../src/config/sidecar-schema.ts';
import type { DownstreamRequest, HttpListener } from '../../src/proxy/listener.ts';
import { createHttpListener } from '../../src/proxy/listener.ts';
import { createReadBuffer } from '../../src/proxy/socket-reads.ts';
import { issueCert } from '../helpers/mesh-pki.ts';
import type { RawConnection } from '../helpers/raw-socket.ts';
import { connectRaw } from '../helpers/raw-socket.ts';

/*
 * A listener's HTTP/1.1 connections read into one shared buffer
 * (src/proxy/socket-reads.ts, readWithoutStream): whatever a request keeps past
 * a read (a head still incomplete, a body chunk, a pipelined request, a body
 * that came with its head) must be its own, not bytes that the next read, of
 * another caller, writes over. Each case lets connection B's request be read
 * into the buffer while A keeps something, then checks A's call whole.
 */

const limits = sidecarConfigSchema.parse({
  workload: { service: 'frontend' },
  inbound: { app: 'http://127.0.0.1:1' },
  mtls: { mode: 'DISABLE' },
}).limits;

/** One event-loop turn: bytes written on loopback before it have been read by then. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Turns until `ready`, a bounded number of them (what was awaited is asserted after). */
async function until(ready: () => boolean): Promise<void> {
  for (let i = 0; i < 1_000 && !ready(); i++) await turn();
}

/** What the app uses of a response: its HTTP/1.1 and HTTP/2 shapes differ in their types, not in these. */
type Response = { writeHead(code: number, headers: Record<string, string>): unknown; end(body: string): unknown };

/**
 * Answers by path: /echo at once with its x-echo field; /hold keeps its response until `release`;
 * /body with the body's chunks as they were handed over (not copied here); /later-body reads its
 * body only once released. Bodies come back as <<text>>.
 */
function createApp() {
  const held: Array<() => void> = [];
  const chunks: Buffer[] = [];
  const answer = (res: Response, text: string): void => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`<<${text}>>`);
  };
  const handler = (req: DownstreamRequest, res: Response): void => {
    const path = req.url ?? '';
    const echo = String(req.headers['x-echo'] ?? '');
    const readBody = (): void => {
      const mine: Buffer[] = [];
      req.on('data', (chunk: Buffer) => {
        mine.push(chunk);
        if (path === '/body') chunks.push(chunk);
      });
      req.on('end', () => answer(res, Buffer.concat(mine).toString('latin1')));
    };
    if (path === '/hold') held.push(() => answer(res, echo));
    else if (path === '/later-body') held.push(readBody);
    else if (path === '/body') readBody();
    else {
      req.resume();
      answer(res, echo);
    }
  };
  return { handler, held, chunks, release: () => held.shift()?.() };
}

/** The bodies of the responses received so far, once there are `count`. */
async function bodies(conn: RawConnection, count: number): Promise<string[]> {
  const text = await conn.waitFor(new RegExp(`^(?:[\\s\\S]*?<<[\\s\\S]*?>>){${count}}`));
  return [...text.matchAll(/<<([\s\S]*?)>>/g)].map((match) => match[1]!);
}

/** B's request: long enough that its read covers every byte of the buffer that A's requests used. */
const OVERWRITE = `GET /echo HTTP/1.1\r\nHost: b\r\nx-echo: b\r\nx-pad: ${'Z'.repeat(400)}\r\n\r\n`;

/** Has connection `b`'s next request read into the shared buffer, over what A's used, and answered. */
async function readOver(b: RawConnection): Promise<void> {
  b.write(OVERWRITE);
  await bodies(b, 2);
}

describe.each([
  ['plaintext', false],
  ['TLS', true],
])('a listener reading into a shared buffer (%s)', (_transport, overTls) => {
  let listener: HttpListener;
  let port: number;
  let app: ReturnType<typeof createApp>;
  let clientTls: tls.ConnectionOptions | undefined;
  beforeAll(async () => {
    let listenerTls: Parameters<typeof createHttpListener>[3]['tls'];
    if (overTls) {
      const cert = await issueCert({ spiffeId: 'spiffe://test.local/ns/default/sa/listener' });
      const server = tls.createServer({ key: cert.keyPem, cert: cert.certPem, ALPNProtocols: ['http/1.1'] });
      listenerTls = { mode: 'STRICT', server, verifyPeer: () => ({ principal: undefined }), onRefused: () => {} };
      clientTls = { ALPNProtocols: ['http/1.1'] };
    }
    listener = createHttpListener('shared', limits, (req, res) => app.handler(req, res as unknown as Response), { tls: listenerTls, readBuffer: createReadBuffer() });
    port = (await listener.listen(0, '127.0.0.1')).port;
  });
  afterAll(() => listener?.destroy());

  const open: RawConnection[] = [];
  afterEach(() => {
    for (const conn of open.splice(0)) conn.destroy();
  });

  /** Two connections, each past its first request: their reads from then on go into the shared buffer. */
  async function twoCallers(): Promise<[RawConnection, RawConnection]> {
    app = createApp();
    const a = await connectRaw(port, clientTls);
    const b = await connectRaw(port, clientTls);
    open.push(a, b);
    for (const conn of [a, b]) conn.write('GET /echo HTTP/1.1\r\nHost: a\r\nx-echo: first\r\n\r\n');
    await Promise.all([bodies(a, 1), bodies(b, 1)]);
    return [a, b];
  }

  /**
   * A sends `first`; once the listener keeps part of it (`kept`, or one event-loop turn for bytes it cannot be
   * asked about), B's next request is read into the shared buffer over it. Returns A.
   */
  async function keepThenReadOver(first: string, kept?: () => boolean): Promise<RawConnection> {
    const [a, b] = await twoCallers();
    a.write(first);
    await (kept ? until(kept) : turn());
    await readOver(b);
    return a;
  }

  it('keeps a head that arrives in two reads whole while another connection is read in between', async () => {
    const a = await keepThenReadOver('GET /echo HTTP/1.1\r\nHost: a\r\nx-echo: the-head-of-');
    a.write('connection-a\r\n\r\n');
    expect((await bodies(a, 2))[1]).toBe('the-head-of-connection-a');
  });

  it("keeps a body chunk a reader holds while another connection's request is read over it", async () => {
    const a = await keepThenReadOver('POST /body HTTP/1.1\r\nHost: a\r\ncontent-length: 8\r\n\r\nAAAA', () => app.chunks.length > 0);
    a.write('BBBB');
    expect((await bodies(a, 2))[1]).toBe('AAAABBBB');
    expect(Buffer.concat(app.chunks).toString()).toBe('AAAABBBB');
  });

  it('keeps a body that came with its head until the handler reads it', async () => {
    const a = await keepThenReadOver('POST /later-body HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\n\r\nAAAA', () => app.held.length > 0);
    app.release();
    expect((await bodies(a, 2))[1]).toBe('AAAA');
  });

  it('keeps a pipelined request intact while the response before it is pending and another connection is read', async () => {
    const pipelined = 'GET /hold HTTP/1.1\r\nHost: a\r\nx-echo: one\r\n\r\nGET /echo HTTP/1.1\r\nHost: a\r\nx-echo: the-pipelined-request\r\n\r\n';
    const a = await keepThenReadOver(pipelined, () => app.held.length > 0);
    app.release();
    expect((await bodies(a, 3)).slice(1)).toEqual(['one', 'the-pipelined-request']);
  });
});
