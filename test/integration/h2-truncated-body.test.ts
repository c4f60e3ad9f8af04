import http2 from 'node:http2';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppAndSidecar } from '../helpers/app-sidecar.ts';
import { startAppAndSidecar } from '../helpers/app-sidecar.ts';

/*
 * A body that cannot be whole once its head went out must reach an HTTP/2
 * caller as a stream reset with an error code: a RST_STREAM NO_ERROR (what a
 * bare destroy() of an Http2ServerResponse sends) reads as a clean end in
 * node's client, which then takes the truncated body for the whole answer.
 */

describe('an HTTP/2 caller and an app that fails mid-body', () => {
  let pair: AppAndSidecar;
  beforeAll(async () => {
    pair = await startAppAndSidecar({
      app: (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('the first half');
        // The app dies mid-body: its connection goes, the rest never comes.
        setTimeout(() => (res.socket as Socket).destroy(), 20);
      },
    });
  });
  afterAll(async () => {
    await pair?.close();
  });

  it('gets a reset with INTERNAL_ERROR after the part that came, never a clean end', async () => {
    const client = http2.connect(pair.sc.inboundUrl);
    try {
      const outcome = await new Promise<{ status: number | undefined; body: string; ended: boolean; rst: number | undefined }>((resolve) => {
        const stream = client.request({ ':path': '/', ':authority': 'orders.shop' });
        let status: number | undefined;
        let body = '';
        let ended = false;
        stream.setEncoding('utf8');
        stream.on('response', (h) => (status = h[':status']));
        stream.on('data', (chunk: string) => (body += chunk));
        stream.on('end', () => (ended = true));
        stream.on('error', () => {});
        stream.on('close', () => resolve({ status, body, ended, rst: stream.rstCode }));
        stream.end();
      });
      expect(outcome).toEqual({ status: 200, body: 'the first half', ended: false, rst: http2.constants.NGHTTP2_INTERNAL_ERROR });
    } finally {
      client.close();
    }
    const line = pair.sc.logs.find((l) => l.log === 'access' && l.protocol === 'HTTP/2');
    expect(line).toMatchObject({ status: 502, reason: 'upstream.reset' });
  });
});
