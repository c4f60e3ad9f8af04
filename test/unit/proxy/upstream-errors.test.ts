import { errors } from 'undici';
import { describe, expect, it } from 'vitest';
import { reasonCode } from '../../../src/core/reason-codes.ts';
import { AttemptTimeoutError, classifyUpstreamError, isRouteTimeout, reasonForFailure } from '../../../src/proxy/upstream-errors.ts';

describe('classifyUpstreamError', () => {
  it.each([
    ['a parser error without a code (what undici 8 throws for a bad status line)', new errors.HTTPParserError('Response does not match the HTTP/1.1 protocol (Invalid response status)')],
    ['a parser error with its llhttp code', Object.assign(new Error('bad chunk'), { code: 'HPE_INVALID_CHUNK_SIZE' })],
    ['a body shorter or longer than Content-Length', new errors.ResponseContentLengthMismatchError()],
    ['response headers beyond the parser limit', new errors.HeadersOverflowError()],
  ])('names %s upstream.protocol_error, a 502', (_what, err) => {
    const failure = classifyUpstreamError(err);
    expect(failure).toBe('protocol-error');
    expect(reasonForFailure(failure)).toBe('upstream.protocol_error');
    expect(reasonCode('upstream.protocol_error').http).toBe(502);
  });

  it('keeps resets and refusals apart from protocol errors', () => {
    expect(classifyUpstreamError(new errors.SocketError('other side closed'))).toBe('reset');
    expect(classifyUpstreamError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))).toBe('connect-failure');
  });
});

describe('attempt timeouts', () => {
  it('tells the route timeout from a per-try one by its scope, not its message; both are 504 upstream.timeout', () => {
    const route = new AttemptTimeoutError('route');
    const perTry = new AttemptTimeoutError('try');
    expect([isRouteTimeout(route), isRouteTimeout(perTry)]).toEqual([true, false]);
    expect(isRouteTimeout(Object.assign(new AttemptTimeoutError('try'), { message: 'route timeout' }))).toBe(false);
    expect(isRouteTimeout(new Error('route timeout'))).toBe(false);
    for (const err of [route, perTry]) expect(reasonForFailure(classifyUpstreamError(err))).toBe('upstream.timeout');
    expect(reasonCode('upstream.timeout').http).toBe(504);
  });
});
